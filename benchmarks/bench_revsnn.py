"""RevSNN training memory and step time: RevSResNet 21/37/109 vs MS-ResNet34, RevSFormer vs
Spikingformer, and SpikingJelly's MS-ResNet34 (optional peer), every memory mode each model
supports, in one process; writes ``docs/results/revsnn_<device>.json`` (and a depth plot).

Memory: ``revsnn.bench.measure.memory`` (peak live tensors of one training step, per image at
batch 2->4 and 16->32, and the batch-independent part). Step time: training steps of every mode
of a model interleaved at ``--time-batch``, process CPU and wall time of the same steps, ratio
to the model's ``none`` step.

    python benchmarks/bench_revsnn.py
    python benchmarks/bench_revsnn.py --models revs_resnet37,ms_resnet34 --no-time
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from revsnn.bench import report
from revsnn.bench.measure import Settings, memory_rows, range_key, step_times, time_columns
from revsnn.bench.peers import is_peer, peer_unavailable_reason
from revsnn.bench.results import RESULTS_DIR, provenance, table, write_results
from revsnn.bench.setups import create, in_modes, supported_modes

MODELS = ("revs_resnet21,revs_resnet37,revs_resnet109,ms_resnet34,revsformer_2_384,"
          "revsformer_4_384,spikingformer_4_384,spikingjelly:ms_resnet34,"
          "spikingjelly:ms_resnet34+memopt1")


def log(msg: str) -> None:
    print(f"[bench_revsnn] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=MODELS, help="comma-separated registered or peer names")
    p.add_argument("--device", default="cpu")
    p.add_argument("--ranges", nargs="+", default=["2,4", "16,32"])
    p.add_argument("--time-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = Settings(device=args.device, time_batch=args.time_batch, repeats=args.repeats,
                 threads=args.threads,
                 ranges=tuple(tuple(int(b) for b in r.split(",")) for r in args.ranges))
    rows, skipped = [], {}
    for name in args.models.split(","):
        if is_peer(name) and peer_unavailable_reason(name):
            skipped[name] = peer_unavailable_reason(name)
            log(f"skip {name}: {skipped[name]}")
            continue
        model = create(name, num_classes=s.num_classes, T=s.T, device=s.device)
        base = {"model": name, "depth": getattr(model, "depth", "")}
        got = memory_rows(model, s, base=base, log=log)
        modes = [m.value for m in supported_modes(model)]
        if not args.no_time and len(modes) > 1:
            cols = time_columns(step_times(in_modes(model, modes), s),
                                "none" if "none" in modes else None)
            for r in got:
                r.update(cols[r["mode"]])
            log(f"{name} step / none: " + ", ".join(
                f"{r['mode']} {r.get('step_vs_none', float('nan')):.3f}" for r in got))
        rows += got
        del model
    keys = [range_key(r) for r in s.ranges]
    columns = {"model": "model", "mode": "mode",
               **{f"mib_{k}": f"MiB/img {k.replace('_', '→')}" for k in keys},
               **{f"fixed_{k}": f"fixed MiB ({k.replace('_', '→')})" for k in keys},
               "saved_mib": "saved for backward, MiB/img"}
    if not args.no_time:
        columns.update({"step_vs_none_cpu": "step / none (CPU)",
                        "step_vs_none_wall": "step / none (wall)"})
    prov = provenance(args.device, {**s.as_dict(), "models": args.models,
                                    "skipped": skipped})
    text = table(rows, columns, prov)
    print(text)
    kind = torch.device(args.device).type
    out = args.out or RESULTS_DIR / f"revsnn_{kind}.json"
    depth_rows = [r for r in rows if r["model"].startswith("revs_resnet")]
    if report.plots_available() and depth_rows:
        png = out.with_name(f"revsnn_memory_vs_depth_{kind}.png")
        plot_rows = [{**r, "range": k.replace("_", "→"), "mib": r[f"mib_{k}"]}
                     for r in depth_rows for k in keys]
        report.plot_lines(plot_rows, "depth", "mib", ["mode", "range"], png, xlabel="depth",
                          ylabel="MiB per image", title="RevSResNet training memory per image")
        log(f"wrote {png}")
    write_results(out, prov, rows, summary=summary(rows, keys), tables={"memory": text})
    log(f"wrote {out}")
    return 0


def summary(rows, keys):
    """Figures quoted in prose: reversible growth 21 -> 109 and the headline ratios."""
    mem = {(r["model"], r["mode"]): r for r in rows}
    out = {}
    for k in keys:
        a, b = mem.get(("revs_resnet21", "reversible")), mem.get(("revs_resnet109", "reversible"))
        if a and b:
            out[f"rev_growth_21_109_pct_{k}"] = 100 * (b[f"mib_{k}"] / a[f"mib_{k}"] - 1)
        pairs = {"ms34_over_rev37": (("ms_resnet34", "none"), ("revs_resnet37", "reversible")),
                 "sf4_over_rsf4": (("spikingformer_4_384", "none"),
                                   ("revsformer_4_384", "reversible"))}
        for name, (num, den) in pairs.items():
            if num in mem and den in mem:
                out[f"{name}_{k}"] = mem[num][f"mib_{k}"] / mem[den][f"mib_{k}"]
    return out


if __name__ == "__main__":
    sys.exit(main())
