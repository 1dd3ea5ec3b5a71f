"""Reversible training memory per image of RevSResNet at depth 21, 37 and 109 (CPU or CUDA).

    python benchmarks/revsnn_depth_memory.py [--device cuda]

T = 4, 32x32, 10 classes, memory = slope of peak live tensors between batch 2 and 4
(revsnn.bench.memory.measure_training_step).
"""

import argparse
import time

import torch

import revsnn
from revsnn.bench.memory import measure_training_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="revs_resnet21,revs_resnet37,revs_resnet109")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"device {args.device}, torch {torch.__version__}, T=4, 32x32, reversible")
    for name in args.models.split(","):
        t = time.time()
        m = revsnn.create_model(name, num_classes=10, T=4, memory_mode="reversible")
        r = measure_training_step(
            m,
            lambda B: (torch.randn(B, 3, 32, 32), torch.randint(0, 10, (B,))),
            device=args.device,
            batches=(2, 4),
        )
        print(
            f"{name}: {r['mib_per_image']:.3f} MiB/img peak slope, "
            f"{r['saved_mib_per_image']:.3f} MiB/img saved for backward "
            f"({time.time() - t:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
