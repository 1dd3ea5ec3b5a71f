"""``python -m revsnn.bench memory|speed|energy ...`` (same as ``revsnn bench ...``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
