"""The claims table: every published claim (``revsnn.bench.claims.CLAIMS``) measured on the same
comparison, in one process, on one device; writes ``docs/results/claims_<device>.json``.

    python benchmarks/claims.py                                  # all claims, CPU
    python benchmarks/claims.py --only trevsnn-memory,trevsnn-time
    python benchmarks/claims.py --device cuda --time-batch 32 --ranges 2,4 16,32 32,64
    python benchmarks/claims.py --list                           # claim ids

A run of some claims (``--only``, ``--smoke``) writes under ``results/claims/`` unless ``--out``
says otherwise, so it never replaces the published table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from revsnn.bench.claims import CLAIMS, run_claims, select, tiny
from revsnn.bench.measure import add_arguments, settings_from
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table

COLUMNS = {"statement": "claim", "figure": "paper", "measured": "ours", "details":
           "measured values (MiB/img at each batch range; fixed = batch-independent MiB)"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated claim ids (--list shows them)")
    p.add_argument("--list", action="store_true", help="print the claim ids and exit")
    p.add_argument("--energy-images", type=int, default=16)
    add_arguments(p)
    p.add_argument("--smoke", action="store_true",
                   help="tiny stand-in models (revsnn.bench.claims.TINY), 8x8 images, no peers: "
                   "exercises the loop in seconds (writes under results/ unless --out)")
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    if args.list:
        print("\n".join(f"{c.id}: {c.statement} ({c.figure})" for c in CLAIMS))
        return 0
    s = settings_from(args, image_size=8 if args.smoke else 32, energy_images=args.energy_images)
    claims = select([i for i in args.only.split(",") if i])
    if args.smoke:
        claims = [tiny(c) for c in claims if not any(":" in st.model for st in c.setups)]
    t0 = time.time()
    rows = run_claims(claims, s, log=lambda m: print(f"[claims] {m}", file=sys.stderr,
                                                     flush=True))
    prov = provenance(args.device, s.as_dict(), command=command)
    text = table(rows, COLUMNS, prov)
    folder = Path("results") / "claims" if (args.only or args.smoke) else RESULTS_DIR
    out = args.out or folder / f"claims_{torch.device(args.device).type}.json"
    return publish(out, prov, rows, {"seconds": round(time.time() - t0)}, {"readme": text})


if __name__ == "__main__":
    sys.exit(main())
