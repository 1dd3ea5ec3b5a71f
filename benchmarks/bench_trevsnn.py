"""T-RevSNN training memory, step time and inference energy against its memory modes and its
standard-BPTT twin, side by side in one process; writes ``docs/results/trevsnn_<device>.json``.

For every T (columns = time steps): ``trevsnn_tiny`` in memory modes none / checkpoint /
reversible and ``trevsnn_tiny_bptt`` ("bptt": every spike a multi-step LIF over T, plain BPTT).
The training objective is the training loop's: every head, T-RevSNN's column loss, label
smoothing 0.1 (``revsnn.bench.setups.objective``).

- memory: per image at batch 2->4 and 16->32, the batch-independent part, saved bytes, and the
  columns the reversible engine stored (``memory_summary``);
- step time: the four set-ups interleaved at each ``--time-batches`` (process CPU and wall time
  of the same steps), ratios to ``none`` and reversible / bptt;
- energy: one eval forward on real digits images (normalised as in training, resized), untrained
  weights, under both spike-input conventions (``strict``, ``linear_chain``).

    python benchmarks/bench_trevsnn.py                      # T = 4 8 16
    python benchmarks/bench_trevsnn.py --Ts 4 --no-time --no-energy
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from revsnn.bench import measure, report
from revsnn.bench.data import digits_images
from revsnn.bench.results import RESULTS_DIR, command_line, provenance, publish, table
from revsnn.bench.setups import create, in_modes, stored_columns

RULES = ("strict", "linear_chain")


def log(msg: str) -> None:
    print(f"[bench_trevsnn] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="trevsnn_tiny")
    p.add_argument("--Ts", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--image", type=int, default=32, help="image height = width")
    p.add_argument("--time-batches", type=int, nargs="+", default=[4, 16])
    p.add_argument("--energy-images", type=int, default=32)
    p.add_argument("--no-time", action="store_true")
    p.add_argument("--no-energy", action="store_true")
    measure.add_arguments(p, time_batch=None)
    args = p.parse_args(argv)
    command = command_line([__file__, *(sys.argv[1:] if argv is None else argv)])
    base = measure.settings_from(args, image_size=args.image, energy_images=args.energy_images)
    keys = [measure.range_key(r) for r in base.ranges]
    mem_rows, time_rows, energy_rows = [], [], []
    for T in args.Ts:
        s = dataclasses.replace(base, T=T)
        rev = create(args.model, T=T, memory_mode="reversible", device=s.device)
        bptt = create(args.model + "_bptt", T=T, device=s.device)
        rows = measure.memory_rows(rev, s, base={"T": T, "model": args.model}, log=log)
        stored = stored_columns(rev)  # of the last step measured: the reversible one
        for r in rows:
            r["kind"] = r["mode"]
            if r["mode"] == "reversible":
                r["stored_columns"] = stored
        rows += [{**r, "kind": "bptt"} for r in measure.memory_rows(
            bptt, s, modes=["none"], base={"T": T, "model": args.model + "_bptt"}, log=log)]
        for r in rows:
            for k in keys:
                r[f"bptt_over_{k}"] = rows[-1][f"mib_{k}"] / r[f"mib_{k}"]
        mem_rows += rows
        for B in [] if args.no_time else args.time_batches:
            setups = {**in_modes(rev, ["none", "checkpoint", "reversible"]), "bptt": bptt}
            times = measure.step_times(setups, dataclasses.replace(s, time_batch=B))
            cols = measure.time_columns(times, "none")
            for kind, c in cols.items():
                time_rows.append({"T": T, "batch": B, "kind": kind, **c,
                                  "rev_over_bptt": (cols["reversible"]["step_cpu_ms"]
                                                    / cols["bptt"]["step_cpu_ms"])})
            log(f"T={T} batch {B}: reversible / none {cols['reversible']['step_vs_none']:.3f}, "
                f"bptt / none {cols['bptt']['step_vs_none']:.3f}")
        if not args.no_energy:
            x, _ = digits_images(s.energy_images, s.image_size, s.in_channels)
            e = {"reversible": measure.energy(rev, x, RULES),
                 "bptt": measure.energy(bptt, x, RULES)}
            row = {"T": T, "images": int(x.shape[0])}
            for rule in RULES:
                for kind in e:
                    row[f"{kind}_mj_{rule}"] = e[kind][rule]["energy_mj_per_image"]
                    row[f"{kind}_stem_mj_{rule}"] = e[kind][rule]["stem_mj"]
                row[f"bptt_over_rev_{rule}"] = (e["bptt"][rule]["energy_mj_per_image"]
                                                / e["reversible"][rule]["energy_mj_per_image"])
            row["reversible_rate"] = e["reversible"]["strict"]["mean_firing_rate"]
            row["bptt_rate"] = e["bptt"]["strict"]["mean_firing_rate"]
            energy_rows.append(row)
            log(f"T={T} energy bptt / rev: " + ", ".join(
                f"{rule} {row[f'bptt_over_rev_{rule}']:.2f}" for rule in RULES))
        del rev, bptt
    prov = provenance(args.device, {**base.as_dict(), "Ts": args.Ts, "model": args.model,
                                    "time_batches": args.time_batches}, command=command)
    tables = {"memory": table(mem_rows, {
        "T": "T", "kind": "set-up", **measure.memory_headers(base.ranges),
        "saved_mib": "saved, MiB/img", f"bptt_over_{keys[-1]}":
            f"bptt / this ({keys[-1].replace('_', '→')})",
        "stored_columns": "stored columns"}, prov)}
    if time_rows:
        wide = {}
        for r in time_rows:  # one row per (T, batch): each set-up's step / none
            w = wide.setdefault((r["T"], r["batch"]), {"T": r["T"], "batch": r["batch"],
                                                       "rev_over_bptt": r["rev_over_bptt"]})
            w[f"{r['kind']}_cpu"], w[f"{r['kind']}_wall"] = (r["step_vs_none_cpu"],
                                                             r["step_vs_none_wall"])
        tables["time"] = table(list(wide.values()), {
            "T": "T", "batch": "batch", "checkpoint_cpu": "checkpoint / none (CPU)",
            "reversible_cpu": "reversible / none (CPU)",
            "reversible_wall": "reversible / none (wall)", "bptt_cpu": "BPTT / none (CPU)",
            "rev_over_bptt": "reversible / BPTT (CPU)"}, prov)
    if energy_rows:
        tables["energy"] = table(energy_rows, {
            "T": "T", "reversible_mj_strict": "T-RevSNN mJ (strict)",
            "bptt_mj_strict": "BPTT mJ (strict)",
            "bptt_over_rev_strict": "BPTT / T-RevSNN (strict)",
            "reversible_mj_linear_chain": "T-RevSNN mJ (linear_chain)",
            "bptt_mj_linear_chain": "BPTT mJ (linear_chain)",
            "bptt_over_rev_linear_chain": "BPTT / T-RevSNN (linear_chain)",
            "reversible_rate": "T-RevSNN rate", "bptt_rate": "BPTT rate"}, prov,
            fmt={"reversible_mj_strict": ".4f", "bptt_mj_strict": ".4f",
                 "reversible_mj_linear_chain": ".4f", "bptt_mj_linear_chain": ".4f",
                 "reversible_rate": ".3f", "bptt_rate": ".3f"})
    kind = torch.device(args.device).type
    out = args.out or RESULTS_DIR / f"trevsnn_{kind}.json"
    if len(args.Ts) > 1:
        png = report.plot_memory(mem_rows, "T", ["kind"], base.ranges,
                                 out.with_name(f"trevsnn_memory_vs_T_{kind}.png"),
                                 f"{args.model}: training memory per image", "T (columns)")
        log(f"plot: {png or 'skipped (pip install -e .[bench])'}")
    rev = {r["T"]: r for r in mem_rows if r["kind"] == "reversible"}
    lo, hi = min(args.Ts), max(args.Ts)
    summary = {f"rev_growth_T{lo}_T{hi}_pct_{k}": 100 * (rev[hi][f"mib_{k}"] / rev[lo][f"mib_{k}"]
                                                         - 1) for k in keys}
    return publish(out, prov, mem_rows, summary, tables,
                   sections={"time_rows": time_rows, "energy_rows": energy_rows})


if __name__ == "__main__":
    sys.exit(main())
