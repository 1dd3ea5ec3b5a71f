"""The claims table: every published claim (``revsnn.bench.claims.CLAIMS``) measured on the same
comparison, in one process, on one device; writes ``docs/results/claims_<device>.json``.

    python benchmarks/claims.py                                  # all claims, CPU
    python benchmarks/claims.py --only trevsnn-memory,trevsnn-time
    python benchmarks/claims.py --device cuda --time-batch 32 --ranges 2,4 16,32 32,64
    python benchmarks/claims.py --list                           # claim ids
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from revsnn.bench.claims import CLAIMS, run_claims, select, tiny
from revsnn.bench.measure import Settings
from revsnn.bench.results import RESULTS_DIR, provenance, table, write_results

COLUMNS = {"statement": "claim", "figure": "paper", "measured": "ours", "details":
           "measured values (MiB/img at each batch range; fixed = batch-independent MiB)"}


def parse_ranges(items):
    return tuple(tuple(int(b) for b in item.split(",")) for item in items)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated claim ids (--list shows them)")
    p.add_argument("--list", action="store_true", help="print the claim ids and exit")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranges", nargs="+", default=["2,4", "16,32"],
                   help="memory batch ranges, e.g. 2,4 16,32")
    p.add_argument("--time-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--energy-images", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true",
                   help="tiny stand-in models (revsnn.bench.claims.TINY), 8x8 images, no peers: "
                   "exercises the loop in seconds (writes under results/ unless --out)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results file (default: {RESULTS_DIR}/claims_<device type>.json for all "
                   "claims; results/claims/claims_<device type>.json with --only, so a partial "
                   "run never replaces the published table)")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(f"{c.id}: {c.statement} ({c.figure})" for c in CLAIMS))
        return 0
    torch.set_num_threads(args.threads)
    s = Settings(device=args.device, ranges=parse_ranges(args.ranges),
                 image_size=8 if args.smoke else 32,
                 time_batch=args.time_batch, repeats=args.repeats,
                 energy_images=args.energy_images, threads=args.threads)
    claims = select([i for i in args.only.split(",") if i])
    if args.smoke:
        claims = [tiny(c) for c in claims if not any(":" in st.model for st in c.setups)]
    t0 = time.time()
    rows = run_claims(claims, s, log=lambda m: print(f"[claims] {m}", file=sys.stderr,
                                                     flush=True))
    prov = provenance(args.device, s.as_dict())
    text = table(rows, COLUMNS, prov)
    print(text)
    folder = Path("results") / "claims" if (args.only or args.smoke) else RESULTS_DIR
    out = args.out or folder / f"claims_{torch.device(args.device).type}.json"
    write_results(out, prov, rows, {"seconds": round(time.time() - t0)}, {"readme": text})
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
