import sys

import torch

# Tiny CPU workloads are much faster single-threaded (and CI has 2 shared cores).
torch.set_num_threads(1)
sys.dont_write_bytecode = True
