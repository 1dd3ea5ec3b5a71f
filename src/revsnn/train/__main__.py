"""``python -m revsnn.train ...`` (also ``torchrun --nproc_per_node=N -m revsnn.train ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
