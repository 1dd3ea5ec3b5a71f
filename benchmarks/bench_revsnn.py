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

import torch

import revsnn
from revsnn.bench import measure, report
from revsnn.bench.peers import is_peer, list_peers, peer_unavailable_reason
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import create, family, in_modes, supported_modes


def default_models() -> str:
    """The static-image models of the RevSNN family and its counterparts (from the registry),
    plus the SpikingJelly peer."""
    names = [n for fam in ("revsnn", "msresnet", "spikingformer")
             for n in revsnn.list_models(family=fam)
             if not n.endswith("_test") and revsnn.model_info(n).input != "frames"]
    return ",".join(names + [n for n in list_peers() if n.startswith("spikingjelly:ms_resnet34")])


def log(msg: str) -> None:
    print(f"[bench_revsnn] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=default_models(),
                   help="comma-separated registered or peer names (default: the RevSNN family "
                   "and its counterparts from the registry, and the SpikingJelly peer)")
    p.add_argument("--no-time", action="store_true")
    measure.add_arguments(p)
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    s = measure.settings_from(args)
    rows, skipped = [], {}
    for name in args.models.split(","):
        if is_peer(name) and peer_unavailable_reason(name, s.device):
            skipped[name] = peer_unavailable_reason(name, s.device)
            log(f"skip {name}: {skipped[name]}")
            continue
        model = create(name, num_classes=s.num_classes, T=s.T, device=s.device)
        base = {"model": name, "depth": getattr(model, "depth", "")}
        got = measure.memory_rows(model, s, base=base, log=log)
        modes = [m.value for m in supported_modes(model)]
        if not args.no_time and len(modes) > 1:
            cols = measure.time_columns(measure.step_times(in_modes(model, modes), s),
                                "none" if "none" in modes else None)
            for r in got:
                r.update(cols[r["mode"]])
            log(f"{name} step / none: " + ", ".join(
                f"{r['mode']} {r.get('step_vs_none', float('nan')):.3f}" for r in got))
        rows += got
        del model
    keys = [measure.range_key(r) for r in s.ranges]
    columns = {"model": "model", "mode": "mode", **measure.memory_headers(s.ranges),
               "saved_mib": "saved for backward, MiB/img"}
    if not args.no_time:
        columns.update({"step_vs_none_cpu": "step / none (CPU)",
                        "step_vs_none_wall": "step / none (wall)"})
    prov = provenance(args.device, {**s.as_dict(), "models": args.models,
                                    "skipped": skipped}, command=command)
    text = table(rows, columns, prov)
    kind = torch.device(args.device).type
    out = args.out or RESULTS_DIR / f"revsnn_{kind}.json"
    depth_rows = [r for r in rows if family(r["model"]) == "RevSResNet"]
    if depth_rows:
        png = report.plot_memory(depth_rows, "depth", ["mode"], s.ranges,
                                 out.with_name(f"revsnn_memory_vs_depth_{kind}.png"),
                                 "RevSResNet training memory per image")
        log(f"plot: {png or 'skipped (pip install -e .[bench])'}")
    return publish(out, prov, rows, summary(rows, keys), {"memory": text})


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
