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
from pathlib import Path

import torch

from revsnn.bench import report
from revsnn.bench.measure import Settings, memory_rows, range_key, step_times, time_columns
from revsnn.bench.results import RESULTS_DIR, provenance, table, write_results
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
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranges", nargs="+", default=["2,4", "16,32"])
    p.add_argument("--time-batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Settings(device=args.device, time_batch=args.time_batch, repeats=args.repeats,
                 threads=args.threads,
                 ranges=tuple(tuple(int(b) for b in r.split(",")) for r in args.ranges))
    keys = [range_key(r) for r in s.ranges]
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
                got[k].update(memory_rows(m, s, modes=[args.mode], base={"model": k}, log=log)[0])
            for k in models:
                for key in keys:
                    got[k][f"mib_{key}_vs_{base}"] = (got[k][f"mib_{key}"]
                                                      / got[base][f"mib_{key}"])
        if not args.no_time:
            for train, prefix in ((True, "step"), (False, "infer")):
                cols = time_columns(step_times(models, s, train=train), base, prefix)
                for k in models:
                    got[k].update(cols[k])
            log(f"depth {depth}: " + ", ".join(
                f"{k} step {got[k][f'step_vs_{base}']:.3f}, infer {got[k][f'infer_vs_{base}']:.3f}"
                for k in models))
        rows += got.values()
        del models
    columns = {"depth": "depth", "kind": "model", "params": "params"}
    if not args.no_memory:
        columns.update({f"mib_{k}": f"MiB/img {k.replace('_', '→')}" for k in keys})
        columns.update({f"fixed_{k}": f"fixed MiB ({k.replace('_', '→')})" for k in keys})
        columns["saved_mib"] = "saved, MiB/img"
    if not args.no_time:
        columns.update({f"step_vs_{base}_cpu": "step / RevSResNet (CPU)",
                        f"step_vs_{base}_wall": "step / RevSResNet (wall)",
                        f"infer_vs_{base}_cpu": "inference / RevSResNet (CPU)"})
    prov = provenance(args.device, {**s.as_dict(), "depths": args.depths, "kinds": args.kinds,
                                    "mode": args.mode, "streams": args.streams,
                                    "widths": args.widths})
    text = table(rows, columns, prov, fmt={"params": ",d"})
    print(text)
    kind = torch.device(args.device).type
    out = args.out or RESULTS_DIR / f"pararevsnn_{kind}.json"
    if report.plots_available() and not args.no_memory and len(args.depths) > 1:
        png = out.with_name(f"pararevsnn_memory_vs_depth_{kind}.png")
        pts = [{**r, "range": k.replace("_", "→"), "mib": r[f"mib_{k}"]}
               for r in rows for k in keys]
        report.plot_lines(pts, "depth", "mib", ["kind", "range"], png, xlabel="depth",
                          ylabel="MiB per image", title=f"training memory per image ({args.mode})")
        log(f"wrote {png}")
    write_results(out, prov, rows, tables={"table": text})
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
