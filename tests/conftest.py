import os
import sys

import torch

# Small CPU runs are faster (and more repeatable) single-threaded per test process.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
sys.dont_write_bytecode = True
