"""The memory planner against measurements: plans for budgets of 25 / 50 / 75 % of the ``none``
step's activation memory, predicted vs measured peak and step, and the single modes.

For each model (batch 16, T = 4, 32x32, 10 classes, SGD with momentum, ``revsnn train``'s step:
every head and its loss, gradients held, the optimiser's step; 1 CPU thread):

1. ``revsnn.plan.profile``: memory per part at batch 8 and 16, time at batch 16 (``--rounds``
   interleaved rounds over the profiled plans);
2. budgets ``fixed + f * A_none`` for f in 0.25 / 0.5 / 0.75, where ``fixed`` is what the step
   holds throughout (parameters, buffers, gradients, momentum, batch) and ``A_none`` the ``none``
   step's peak above it; ``revsnn.plan.solve`` at each (the leanest plan when nothing fits);
   MS-ResNet34 also at ``fixed + 30 MiB/image`` (SpikingJelly memopt level 4's point);
3. ``revsnn.plan.measure_plans``: every planned plan and the three single modes (each family's
   ``set_memory_mode(mode)``) measured in one process, interleaved (``--repeats`` rounds, each
   plan once per round): peak at batch 16 (and at batch 8, for the per-image slope), median
   wall and process-CPU step time.

Goals: predicted peak within 10 % and predicted step within 15 % of measured; at every budget
the planned step no slower than the best single mode that fits; MS-ResNet34 at <= 30 MiB/image
<= 1.15x its ``none`` step; RevSResNet37 at half the ``none`` memory <= 1.15x.

    python benchmarks/plan_budgets.py                           # the four models, ~35 min CPU
    python benchmarks/plan_budgets.py --models trevsnn_tiny --rounds 1 --repeats 5
    python benchmarks/plan_budgets.py --figure-only             # redraw from the JSON

Writes ``OUT/plan_budgets_cpu.json`` (every model: profile, plans, measurements, settings,
device, torch, commit; a run of some models updates their entries only), ``OUT/plan_budgets_cpu.md``
and ``OUT/plan_space_<figure-model>_cpu.png`` (predicted step vs memory per image of every plan
the planner considers, the Pareto front, single modes and planned plans as measured).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

import revsnn
from revsnn import plan
from revsnn.bench.peers import list_peers, peer_unavailable_reason
from revsnn.bench.report import environment
from revsnn.bench.results import caption
from revsnn.bench.setups import create
from revsnn.models.objective import TrainForward, model_loss
from revsnn.plan.cost import Profile, predict

MODELS = ["revs_resnet37", "pararevsnn_resnet37", "ms_resnet34", "trevsnn_tiny"]
#: SpikingJelly's MS-ResNet34 (the same 21,282,122 parameters), beside ms_resnet34's plans
PEERS = [n for n in list_peers() if n.startswith("spikingjelly:ms_resnet34")]
FRACTIONS = (0.25, 0.5, 0.75)
MIB = float(1 << 20)


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="timing rounds of the profile")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per measured plan")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    p.add_argument("--out", default="docs/results")
    p.add_argument("--device", default="cpu", help="cpu or cuda (results file per kind)")
    p.add_argument("--peers", nargs="*", default=PEERS,
                   help="peer models measured beside ms_resnet34's plans in the same process "
                   "(skipped, with the reason, where not installed or not on this device)")
    p.add_argument("--peers-beside", default="ms_resnet34",
                   help="the model whose plans the peers are measured beside")
    p.add_argument("--figure-model", default="revs_resnet37")
    p.add_argument("--figure-only", action="store_true")
    return p.parse_args(argv)


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def _spread(times: List[float]) -> float:
    """Interquartile range / median of repeated step times."""
    if len(times) < 4:
        return 0.0
    q = statistics.quantiles(times, n=4)
    return (q[2] - q[0]) / statistics.median(times)


def run_model(name: str, args: argparse.Namespace) -> Dict[str, Any]:
    torch.manual_seed(0)
    model = revsnn.create_model(name, num_classes=args.classes, T=args.T).to(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.image, args.image, generator=g).to(args.device)
    y = torch.randint(0, args.classes, (args.batch,), generator=g).to(args.device)
    step = dict(forward=TrainForward(model), loss_fn=lambda out, t: model_loss(out, t),
                optimizer=_sgd)
    t0 = time.time()
    prof = plan.profile(model, x, y, rounds=args.rounds, **step)
    t_profile = time.time() - t0
    B = args.batch
    q = prof.at(B, args.clock)
    singles = {}
    for mode in revsnn.model_info(name).memory_modes:
        singles[mode] = dict(model.set_memory_mode(mode).memory_plan())
    model.set_memory_mode("none")
    pred_none = predict(prof, singles["none"], B, clock=args.clock)
    fixed = q.fixed
    act_none = pred_none.peak_bytes - fixed
    budgets = {f"{int(100 * f)}%": fixed + f * act_none for f in FRACTIONS}
    if name == "ms_resnet34":
        budgets["30MiB/img"] = fixed + 30 * MIB * B
    planned = {}
    for label, budget in budgets.items():
        sol = plan.solve(prof, B, budget, clock=args.clock)
        planned[label] = {"budget_bytes": budget, "fits": sol.fits, "modes": sol.modes,
                          "shortfall_bytes": sol.shortfall_bytes}
    # measure: single modes and planned plans, interleaved, in one process
    plans: Dict[str, Dict[str, str]] = {f"single:{m}": p for m, p in singles.items()}
    for label, r in planned.items():
        plans[f"plan:{label}"] = r["modes"]
    t1 = time.time()
    meas = plan.measure_plans(model, plans, x, y, rounds=args.repeats, warmup=0, **step)
    half = plan.measure_plans(model, plans, x[: B // 2], y[: B // 2], rounds=0, warmup=0, **step)
    t_measure = time.time() - t1
    rows = {}
    for key, modes in plans.items():
        pr = predict(prof, modes, B, clock=args.clock)
        pc = predict(prof, modes, B, clock="cpu" if args.clock == "wall" else "wall")
        m = meas[key]
        slope = (m["peak_bytes"] - half[key]["peak_bytes"]) / (B - B // 2) / MIB
        rows[key] = {
            "modes": modes,
            "predicted_peak_bytes": pr.peak_bytes, "measured_peak_bytes": m["peak_bytes"],
            "peak_error": pr.peak_bytes / m["peak_bytes"] - 1,
            "predicted_mib_per_image": pr.mib_per_image,
            "measured_mib_per_image": (m["peak_bytes"] - m["fixed_bytes"]) / MIB / B,
            "measured_slope_mib_per_image_8_16": slope,
            "predicted_step_s": pr.step_s, "measured_step_s": m[f"{args.clock}_s"],
            "step_error": pr.step_s / m[f"{args.clock}_s"] - 1,
            "predicted_step_other_clock_s": pc.step_s,
            "measured_step_other_clock_s": m["cpu_s" if args.clock == "wall" else "wall_s"],
            "measured_times_s": m[f"{args.clock}_times_s"],
            "measured_spread": _spread(m[f"{args.clock}_times_s"]),
            "peak_at": pr.peak_at,
        }
    none_meas = rows["single:none"]["measured_step_s"]
    none_pred = rows["single:none"]["predicted_step_s"]
    for r in rows.values():
        r["measured_ratio_to_none"] = r["measured_step_s"] / none_meas
        r["predicted_ratio_to_none"] = r["predicted_step_s"] / none_pred
    checks = {}
    for label, r in planned.items():
        row = rows[f"plan:{label}"]
        fit = [m for m in singles
               if rows[f"single:{m}"]["measured_peak_bytes"] <= r["budget_bytes"]]
        best = min(fit, key=lambda m: rows[f"single:{m}"]["measured_step_s"]) if fit else None
        same = [m for m in fit if singles[m] == r["modes"]]
        best_s = rows[f"single:{best}"]["measured_step_s"] if best else None
        checks[label] = {
            "fits_predicted": r["fits"],
            "fits_measured": row["measured_peak_bytes"] <= r["budget_bytes"],
            "best_single_that_fits": best, "best_single_that_fits_s": best_s,
            "planned_s": row["measured_step_s"],
            "same_plan_as_single": same[0] if same else None,
            # a plan identical to a fitting single mode is that mode (its two timings differ
            # by noise only)
            "planned_not_slower": (True if same and same[0] == best else
                                   row["measured_step_s"] <= best_s) if fit else None,
            "planned_over_best_single": row["measured_step_s"] / best_s if fit else None,
        }
    peers = measure_peers(args, x, y, rows["single:none"]) if name == args.peers_beside else {}
    env = environment(args.device, torch.float32)
    return {
        "model": name, "batch": B, "T": args.T, "image_size": args.image,
        "classes": args.classes, "threads": torch.get_num_threads(), "clock": args.clock,
        "optimizer": "SGD(lr=1e-3, momentum=0.9)", "step": "revsnn train's (every head, "
        "model_loss, zero_grad(set_to_none=False), SGD step)",
        "profile_rounds": args.rounds, "measure_repeats": args.repeats, **env,
        "fixed_bytes": fixed, "none_activation_bytes": act_none,
        "profile_seconds": t_profile, "measure_seconds": t_measure,
        "profile_time_spread": prof.time_spread, "profile_pair_spread_bytes": prof.pair_spread,
        "profile": prof.to_dict(), "planned": planned, "rows": rows, "checks": checks,
        "peers": peers, "device_kind": torch.device(args.device).type,
    }


def measure_peers(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor,
                  ours_none: Dict[str, Any]) -> Dict[str, Any]:
    """Each peer's peak and step, measured as the plans are (the same step, batch, optimiser
    and repeats), one after another in this process; ratios to the peer's plain step and to
    our ``none`` step."""
    B, out = args.batch, {}
    for name in args.peers:
        reason = peer_unavailable_reason(name, args.device)
        if reason:
            print(f"  skip {name}: {reason}", file=sys.stderr, flush=True)
            out[name] = {"skipped": reason}
            continue
        peer = create(name, num_classes=args.classes, T=args.T, image_size=args.image,
                      device=args.device)
        m = plan.measure_plans(peer, {name: {}}, x, y, rounds=args.repeats, warmup=1,
                               optimizer=_sgd)[name]
        out[name] = {"measured_peak_bytes": m["peak_bytes"],
                     "measured_mib_per_image": (m["peak_bytes"] - m["fixed_bytes"]) / MIB / B,
                     "measured_step_s": m[f"{args.clock}_s"],
                     "measured_times_s": m[f"{args.clock}_times_s"],
                     "measured_ratio_to_our_none": m[f"{args.clock}_s"]
                     / ours_none["measured_step_s"]}
    plain = out.get(PEERS[0], {}).get("measured_step_s")
    for r in out.values():
        if plain and "measured_step_s" in r:
            r["measured_ratio_to_peer_plain"] = r["measured_step_s"] / plain
    return out


def _load(path: Path) -> Dict[str, Any]:
    """The per-model entries of the results file (``{"models": ...}``)."""
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return doc.get("models", doc)


def _span(values: List[float]) -> str:
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:+.1f} %" if abs(hi - lo) < 0.05 else f"{lo:+.1f} .. {hi:+.1f} %"


def doc_tables(results: Dict[str, Any]) -> Dict[str, str]:
    """The two tables docs/plan.md quotes: accuracy per model, and the plans per budget."""
    acc = ["| model (parts) | peak: predicted vs measured | step: predicted vs measured | "
           "step / none step: predicted vs measured |", "|---|---|---|---|"]
    for name, r in results.items():
        rows = list(r["rows"].values())
        ratio = [x["predicted_ratio_to_none"] / x["measured_ratio_to_none"] - 1 for x in rows]
        acc.append(f"| `{name}` ({len(r['planned'][next(iter(r['planned']))]['modes'])}) | "
                   f"{_span([x['peak_error'] for x in rows])} | "
                   f"{_span([x['step_error'] for x in rows])} | {_span(ratio)} |")
    names = list(results)
    def order(lab: str):  # the percentages first, then absolute budgets, by value
        return not lab.endswith("%"), float(re.match(r"[\d.]*", lab)[0] or 0)

    labels = sorted({lab for r in results.values() for lab in r["checks"]}, key=order)
    bud = ["| budget | " + " | ".join(f"`{n}`" for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for lab in labels:
        cells = []
        for n in names:
            r = results[n]
            c, row = r["checks"].get(lab), r["rows"].get(f"plan:{lab}")
            if c is None or row is None:
                cells.append("")
            elif not c["fits_measured"]:
                cells.append(f"nothing fits: the leanest plan needs "
                             f"{row['measured_mib_per_image']:.2f} MiB/img")
            elif c["same_plan_as_single"]:
                cells.append(f"= {c['same_plan_as_single']} ({row['measured_mib_per_image']:.2f} "
                             f"MiB/img, {row['measured_ratio_to_none']:.2f}× none)")
            else:
                best = (f", {c['planned_over_best_single']:.2f}× {c['best_single_that_fits']}"
                        if c["best_single_that_fits"] else "")
                cells.append(f"{row['measured_mib_per_image']:.2f} MiB/img, "
                             f"{row['measured_ratio_to_none']:.2f}× none{best}")
        bud.append(f"| {lab} | " + " | ".join(cells) + " |")
    cap = "\n\n" + caption(provenance_of(results))
    return {"accuracy": "\n".join(acc) + cap, "budgets": "\n".join(bud) + cap}


def provenance_of(results: Dict[str, Any]) -> Dict[str, Any]:
    """One provenance record for the file (the settings each model entry also holds)."""
    first = next(iter(results.values()))
    commits = sorted({r["commit"] for r in results.values()})
    kind = first.get("device_kind", "cpu")
    return {
        "command": "python benchmarks/plan_budgets.py" + ("" if kind == "cpu" else
                                                          f" --device {kind}"),
        "device": first["device"], "torch": first["torch"], "dtype": first["dtype"],
        "threads": first["threads"], "commit": ", ".join(commits),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "settings": {k: first[k] for k in ("batch", "T", "image_size", "classes", "clock",
                                           "optimizer", "profile_rounds")},
    }


def write_results_file(results: Dict[str, Any], path: Path) -> None:
    summary = {name: {"profile_seconds": r["profile_seconds"]} for name, r in results.items()}
    doc = {"provenance": provenance_of(results), "summary": summary,
           "tables": doc_tables(results), "models": results}
    path.write_text(json.dumps(doc, indent=1))


def write_markdown(results: Dict[str, Any], path: Path, kind: str) -> None:
    lines = [f"# Memory planner: predicted vs measured ({kind.upper()})", ""]
    for name, r in results.items():
        lines += [
            f"## {name}", "",
            f"batch {r['batch']}, T={r['T']}, {r['image_size']}x{r['image_size']}, "
            f"{r['threads']} thread, {r['device']}, torch {r['torch']}, commit {r['commit']}; "
            f"{r['clock']} time; fixed {r['fixed_bytes'] / MIB:.1f} MiB, none activations "
            f"{r['none_activation_bytes'] / MIB / r['batch']:.2f} MiB/image; profile "
            f"{r['profile_seconds']:.0f} s (timing spread "
            f"{100 * r['profile_time_spread'][r['clock']]:.0f}% IQR/median)", "",
            "| plan | budget | fits | MiB/img pred | MiB/img meas | slope 8-16 | peak err | "
            "step pred s | step meas s | step err | x none pred | x none meas | x none err | "
            "spread |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, row in r["rows"].items():
            label = key.split(":", 1)[1]
            ratio_err = row["predicted_ratio_to_none"] / row["measured_ratio_to_none"] - 1
            p = r["planned"].get(label) if key.startswith("plan:") else None
            budget = f"{(p['budget_bytes'] - r['fixed_bytes']) / MIB / r['batch']:.1f}" if p else ""
            fits = ("yes" if p["fits"] else "no") if p else ""
            lines.append(
                f"| {key} | {budget} | {fits} | {row['predicted_mib_per_image']:.2f} | "
                f"{row['measured_mib_per_image']:.2f} | "
                f"{row['measured_slope_mib_per_image_8_16']:.2f} | "
                f"{100 * row['peak_error']:+.1f}% | {row['predicted_step_s']:.3f} | "
                f"{row['measured_step_s']:.3f} | {100 * row['step_error']:+.1f}% | "
                f"{row['predicted_ratio_to_none']:.3f} | {row['measured_ratio_to_none']:.3f} | "
                f"{100 * ratio_err:+.1f}% | {100 * row['measured_spread']:.0f}% |")
        lines += ["", "| budget | planned s | best single mode that fits | planned / best | "
                  "not slower |", "|---|---|---|---|---|"]
        for label, c in r["checks"].items():
            best = c["best_single_that_fits"]
            same = f" (= {c['same_plan_as_single']})" if c["same_plan_as_single"] else ""
            if best is None:
                lines.append(f"| {label} | {c['planned_s']:.3f}{same} | none fits | | |")
                continue
            lines.append(f"| {label} | {c['planned_s']:.3f}{same} | {best} "
                         f"{c['best_single_that_fits_s']:.3f} | "
                         f"{c['planned_over_best_single']:.3f} | {c['planned_not_slower']} |")
        peers = r.get("peers") or {}
        if peers:
            lines += ["", "Peers, measured after the plans in the same process (same step, "
                      "batch and optimiser):", "",
                      "| peer | MiB/img | step s | x peer plain | x our none |",
                      "|---|---|---|---|---|"]
            for peer, p in peers.items():
                if "skipped" in p:
                    lines.append(f"| {peer} | skipped: {p['skipped']} | | | |")
                    continue
                lines.append(f"| {peer} | {p['measured_mib_per_image']:.2f} | "
                             f"{p['measured_step_s']:.3f} | "
                             f"{p.get('measured_ratio_to_peer_plain', float('nan')):.3f} | "
                             f"{p['measured_ratio_to_our_none']:.3f} |")
        lines.append("")
    lines += ["Budget and MiB/img: (peak - fixed) / batch, fixed = parameters, buffers, gradients, "
              "momentum and the batch. Slope 8-16: measured per-image slope of the peak between "
              "batch 8 and 16. Step err: predicted vs measured step (profile and measurement "
              "minutes apart, so a change of the machine's load shows here); x none: step / the "
              "none step of the same phase (predicted / predicted, measured / measured, "
              "interleaved), x none err: their ratio, free of that drift. Spread: IQR / median "
              "of the measured steps.", ""]
    path.write_text("\n".join(lines))


def figure(result: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prof = Profile.from_dict(result["profile"])
    B, clock = result["batch"], result["clock"]
    q = prof.at(B, clock)
    pts = []
    for modes in plan.all_plans(prof):
        p = predict(prof, modes, B, q, clock)
        pts.append((p.mib_per_image, p.step_s))
    none_s = result["rows"]["single:none"]["predicted_step_s"]
    xs = [a for a, _ in pts]
    ys = [b / none_s for _, b in pts]
    front, best = [], float("inf")
    for a, b in sorted(pts):
        if b < best:
            front.append((a, b / none_s))
            best = b
    fig, ax = plt.subplots(figsize=(7, 4.6))
    ax.scatter(xs, ys, s=4, c="0.75", label=f"every plan, predicted ({len(pts)})")
    ax.step([a for a, _ in front], [b for _, b in front], where="post", c="0.3", lw=1,
            label="least predicted time for the memory")
    none_meas = result["rows"]["single:none"]["measured_step_s"]
    marks = {"single:none": ("o", "C0"), "single:checkpoint": ("s", "C1"),
             "single:reversible": ("^", "C2")}
    for key, row in result["rows"].items():
        if key in marks:
            mk, c = marks[key]
            ax.scatter([row["measured_mib_per_image"]], [row["measured_ratio_to_none"]],
                       marker=mk, s=60, c=c, edgecolors="k", zorder=3,
                       label=f"{key.split(':')[1]} (measured)")
            ax.scatter([row["predicted_mib_per_image"]], [row["predicted_step_s"] / none_s],
                       marker=mk, s=60, facecolors="none", edgecolors=c, zorder=3)
    for i, (key, row) in enumerate(k for k in result["rows"].items() if k[0].startswith("plan:")):
        label = key.split(":", 1)[1]
        fits = "" if result["planned"][label]["fits"] else ", nothing fits: leanest"
        ax.scatter([row["measured_mib_per_image"]], [row["measured_step_s"] / none_meas],
                   marker="*", s=140, c=f"C{3 + i}", edgecolors="k", zorder=4,
                   label=f"plan for {label}{fits} (measured)")
        ax.scatter([row["predicted_mib_per_image"]], [row["predicted_step_s"] / none_s],
                   marker="*", s=140, facecolors="none", edgecolors=f"C{3 + i}", zorder=4)
        budget = (result["planned"][label]["budget_bytes"] - result["fixed_bytes"]) / MIB / B
        ax.axvline(budget, c=f"C{3 + i}", ls=":", lw=1)
    ax.plot([], [], ls="", marker="o", mfc="none", mec="0.3",
            label="hollow: the same plan, predicted; dotted: budgets")
    ax.set_xlabel("memory per image: (peak - fixed) / batch [MiB]")
    ax.set_ylabel(f"step time / none step ({clock})")
    ax.set_title(f"{result['model']}: every per-part plan (batch {B}, T={result['T']}, "
                 f"{result['image_size']}x{result['image_size']}, "
                 f"{result['device']})", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind = torch.device(args.device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or --device cpu")
    jpath = out / f"plan_budgets_{kind}.json"
    results = _load(jpath)
    if not args.figure_only:
        for name in args.models:
            print(f"[plan_budgets] {name} ...", file=sys.stderr, flush=True)
            results[name] = run_model(name, args)
            write_results_file(results, jpath)
            r = results[name]
            for key, row in r["rows"].items():
                print(f"  {key:<18} peak {row['predicted_peak_bytes'] / MIB:8.1f} / "
                      f"{row['measured_peak_bytes'] / MIB:8.1f} MiB "
                      f"({100 * row['peak_error']:+.1f}%)  step {row['predicted_step_s']:.3f} / "
                      f"{row['measured_step_s']:.3f} s ({100 * row['step_error']:+.1f}%)  "
                      f"x none {row['measured_ratio_to_none']:.2f}", file=sys.stderr, flush=True)
    write_results_file(results, jpath)
    write_markdown(results, out / f"plan_budgets_{kind}.md", kind)
    if args.figure_model in results:
        figure(results[args.figure_model], out / f"plan_space_{args.figure_model}_{kind}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
