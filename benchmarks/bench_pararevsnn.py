"""ParaRevSNN-ResNet vs RevSResNet at the same block counts, side by side in one process; writes
``docs/results/pararevsnn_<device>.json``.

At each depth (``revsnn.models.pararevsnn.BLOCKS``): RevSResNet, ParaRevSNN with fused merged
blocks (the registered models) and, with ``--kinds``, ParaRevSNN with separate G_k / F_{k+1}
branches (``pair``), all in ``--mode`` (reversible). Memory per image at each batch range and
the batch-independent part; training-step and inference time of the kinds interleaved (process
CPU and wall time of the same steps), ratios to RevSResNet.

    python benchmarks/bench_pararevsnn.py                             # depths 21 37 69
    python benchmarks/bench_pararevsnn.py --depths 37 69 --no-memory
    python benchmarks/bench_pararevsnn.py --device cuda --kinds revsresnet pararevsnn_pair \\
        --streams --time-batch 32
"""

from __future__ import annotations

import argparse
import sys

import torch

from revsnn.bench import measure, report
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import PARAREV_KINDS, pararev_at_depth


def log(msg: str) -> None:
    print(f"[bench_pararevsnn] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[21, 37, 69])
    p.add_argument("--kinds", nargs="+", default=["revsresnet", "pararevsnn_fused"],
                   choices=PARAREV_KINDS)
    p.add_argument("--mode", default="reversible")
    p.add_argument("--widths", default=None,
                   help="half-stream widths per stage, e.g. 4,8,8,8 (default: the models')")
    p.add_argument("--streams", action="store_true", help="two CUDA streams for 'pair'")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-time", action="store_true")
    measure.add_arguments(p, time_batch=2)
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    s = measure.settings_from(args)
    keys = [measure.range_key(r) for r in s.ranges]
    base = args.kinds[0]
    rows = []
    for depth in args.depths:
        extra = {} if args.widths is None else {
            "widths": tuple(int(w) for w in args.widths.split(","))}
        models = {k: pararev_at_depth(k, depth, streams=args.streams, num_classes=s.num_classes,
                                      T=s.T, memory_mode=args.mode, device=s.device, **extra)
                  for k in args.kinds}
        got = {k: {"depth": depth, "kind": k, "mode": args.mode,
                   "params": sum(p.numel() for p in m.parameters())} for k, m in models.items()}
        if not args.no_memory:
            for k, m in models.items():
                got[k].update(measure.memory_rows(m, s, [args.mode], {"model": k}, log)[0])
            for k in models:
                for key in keys:
                    got[k][f"mib_{key}_vs_{base}"] = (got[k][f"mib_{key}"]
                                                      / got[base][f"mib_{key}"])
        if not args.no_time:
            for train, prefix in ((True, "step"), (False, "infer")):
                times = measure.step_times(models, s, train=train)
                cols = measure.time_columns(times, base, prefix)
                for k in models:
                    got[k].update(cols[k])
            log(f"depth {depth}: " + ", ".join(
                f"{k} step {got[k][f'step_vs_{base}']:.3f}, infer {got[k][f'infer_vs_{base}']:.3f}"
                for k in models))
        rows += got.values()
        del models
    columns = {"depth": "depth", "kind": "model", "params": "params"}
    if not args.no_memory:
        columns.update(measure.memory_headers(s.ranges))
        columns["saved_mib"] = "saved, MiB/img"
    if not args.no_time:
        columns.update({f"step_vs_{base}_cpu": "step / RevSResNet (CPU)",
                        f"step_vs_{base}_wall": "step / RevSResNet (wall)",
                        f"infer_vs_{base}_cpu": "inference / RevSResNet (CPU)"})
    prov = provenance(args.device, {**s.as_dict(), "depths": args.depths, "kinds": args.kinds,
                                    "mode": args.mode, "streams": args.streams,
                                    "widths": args.widths}, command=command)
    text = table(rows, columns, prov, fmt={"params": ",d"})
    kind = torch.device(args.device).type
    out = args.out or RESULTS_DIR / f"pararevsnn_{kind}.json"
    if not args.no_memory and len(args.depths) > 1:
        png = report.plot_memory(rows, "depth", ["kind"], s.ranges,
                                 out.with_name(f"pararevsnn_memory_vs_depth_{kind}.png"),
                                 f"training memory per image ({args.mode})")
        log(f"plot: {png or 'skipped (pip install -e .[bench])'}")
    return publish(out, prov, rows, tables={"table": text})


if __name__ == "__main__":
    sys.exit(main())
