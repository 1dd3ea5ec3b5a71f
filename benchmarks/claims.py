"""The claims table: every published claim of the three papers against our measurement of the
same comparison, all measured in one process on one device.

Rows (``--only`` picks some, by number):

1. RevSNN memory: ``ms_resnet34`` (memory_mode none) / ``revs_resnet37`` (reversible), training
   memory per image (paper 3.79x less).
2. RevSNN memory: ``spikingformer_4_384`` (none) / ``revsformer_4_384`` (reversible) (paper 3.00x).
3. T-RevSNN memory: ``trevsnn_tiny_bptt`` / ``trevsnn_tiny`` (reversible), T=4 (paper 8.6x).
4. T-RevSNN training time: step time of ``trevsnn_tiny_bptt`` / ``trevsnn_tiny`` (reversible)
   (paper 2.0x faster training).
5. T-RevSNN inference energy: ``trevsnn_tiny_bptt`` / ``trevsnn_tiny`` energy per image from a
   real forward on scikit-learn digits (paper 1.6x less).
6. ParaRevSNN training time: ``pararevsnn_resnet37`` vs ``revs_resnet37``, both reversible,
   ``1 - para / rev`` step time (paper 15.8% less at 37 layers, 6.45 -> 5.43 h), plus the memory
   ratio.

How each quantity is measured (``docs/bench.md``):

- memory: ``revsnn.bench.memory.measure_training_step`` -- peak live-tensor bytes of one training
  step (forward + loss + backward) with preallocated gradients, per image as the slope between
  batch ``B // 2`` and ``B`` (2 and 4 by default). Loss: cross-entropy; for the T-RevSNN rows
  the training loss (``revsnn.train.loss.model_loss`` over every head, label smoothing 0.1;
  ``--trevsnn-loss final``: final head only);
- step time: zero_grad + forward + loss + backward + SGD (momentum 0.9) step, timed with
  ``revsnn.bench.timing.time_fn`` (median of ``--repeats`` >= 5 after ``--warmup``) over
  ``--rounds`` interleaved rounds; both wall clock and process CPU time of the same steps are
  recorded (CPU time is steadier on a shared CPU). The claimed ratio uses wall clock on CUDA
  and CPU time on CPU;
- energy: ``revsnn.bench.energy.count_synops`` (E = 4.6 pJ MAC + 0.9 pJ AC), eval mode, on the
  same digits images the ``revsnn bench energy --data digits`` CLI uses, under both spike-input
  conventions: ``linear_chain`` (the SOP convention of published SNN energy figures; the
  measured column) and ``strict`` (ACs only for binary inputs; in the details). Weights are at
  initialisation (no trained checkpoint), so firing rates are those of an untrained network.

Output: the table on stdout, ``OUT/claims.md`` and ``OUT/claims.csv`` (default
``results/claims``); progress on stderr.

    python benchmarks/claims.py                      # all rows, CPU, batch 2->4, T=4, 32x32
    python benchmarks/claims.py --quick --only 3     # smoke run (< 1 minute)
    python benchmarks/claims.py --device cuda --batch 32 --out results/claims_gpu
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import revsnn
from revsnn.bench.energy import SpikeInput, count_synops
from revsnn.bench.memory import measure_training_step
from revsnn.bench.report import environment, markdown_table, write_csv
from revsnn.bench.timing import MIN_REPEATS, time_fn
from revsnn.train.loss import model_loss

Batch = Tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[Any, torch.Tensor], torch.Tensor]

ROWS = (1, 2, 3, 4, 5, 6)
COLUMNS = ["row", "claim", "paper", "measured", "device", "settings", "command", "details"]
HEADERS = {"row": "#", "claim": "claim", "paper": "paper figure",
           "measured": "our measured ratio", "device": "device", "settings": "settings",
           "command": "command", "details": "measured values"}


# --------------------------------------------------------------------------------- helpers
def progress(msg: str) -> None:
    print(f"[claims {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Heads(nn.Module):
    """T-RevSNN training forward: the logits of every head (``final_only``: the last alone)."""

    def __init__(self, model: nn.Module, final_only: bool = False) -> None:
        super().__init__()
        self.model = model
        self.final_only = final_only

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.model(x)] if self.final_only else list(self.model.forward_heads(x))


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def heads_loss(outputs: List[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return model_loss(outputs, target, label_smoothing=0.1)


def time_steps(
    model: nn.Module, batch: Batch, loss_fn: LossFn, device: torch.device, warmup: int,
    repeats: int,
) -> Tuple[List[float], List[float]]:
    """Wall-clock and process-CPU ms of the same timed training steps (on a copy of ``model``,
    so timing never trains the model that is measured next)."""
    m = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    x, target = batch[0].to(device), batch[1].to(device)
    cpu: List[float] = []

    def step() -> None:
        t0 = time.process_time()
        opt.zero_grad(set_to_none=False)
        loss_fn(m(x), target).backward()
        opt.step()
        cpu.append(1e3 * (time.process_time() - t0))

    r = time_fn(step, device, warmup, repeats)
    return [1e3 * t for t in r["times_s"]], cpu[warmup:]


def interleaved_times(
    models: Dict[str, nn.Module], batch: Batch, loss_fn: LossFn, args: argparse.Namespace,
    tag: str,
) -> Dict[str, Dict[str, float]]:
    """Median wall / CPU step ms of each model over ``args.rounds`` interleaved rounds."""
    wall: Dict[str, List[float]] = {k: [] for k in models}
    cpu: Dict[str, List[float]] = {k: [] for k in models}
    for r in range(args.rounds):
        for k, m in models.items():  # interleaved, so load changes hit every model alike
            w, c = time_steps(m, batch, loss_fn, args.dev, args.warmup, args.repeats)
            wall[k] += w
            cpu[k] += c
            progress(f"row {tag} round {r} {k}: wall {statistics.median(w):.1f} ms, "
                     f"cpu {statistics.median(c):.1f} ms")
    return {k: {"wall_ms": statistics.median(wall[k]), "cpu_ms": statistics.median(cpu[k])}
            for k in models}


def memory(model: nn.Module, make_batch: Callable[[int], Batch], loss_fn: LossFn,
           args: argparse.Namespace, tag: str) -> Dict[str, Any]:
    t0 = time.time()
    r = measure_training_step(model, make_batch, loss_fn=loss_fn, device=args.dev,
                              batches=args.mem_batches)
    progress(f"row {tag} {tag_name(model)}: {r['mib_per_image']:.3f} MiB/img "
             f"(saved {r['saved_mib_per_image']:.3f}) [{time.time() - t0:.0f} s]")
    return r


def tag_name(model: nn.Module) -> str:
    inner = model.model if isinstance(model, Heads) else model
    mode = getattr(inner, "memory_mode", None)
    mode = getattr(mode, "value", mode)
    return f"{type(inner).__name__}[{mode}]"


def digits_images(n: int, channels: int, size: int, num_classes: int) -> Batch:
    """The images ``revsnn bench energy --data digits`` uses (scikit-learn digits, resized)."""
    from revsnn.bench.cli import _digits

    return _digits(n, channels, size, num_classes)


def params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# --------------------------------------------------------------------------------- the runner
class Claims:
    """Builds each model once (lazily) and measures the rows that were asked for."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._models: Dict[Tuple[str, str], nn.Module] = {}
        self._cache: Dict[str, Any] = {}

    def model(self, name: str, mode: str) -> nn.Module:
        key = (name, mode)
        if key not in self._models:
            torch.manual_seed(self.args.seed)
            m = revsnn.create_model(name, num_classes=self.args.classes, T=self.args.T,
                                    memory_mode=mode)
            self._models[key] = m.to(self.args.dev)
        return self._models[key]

    def trevsnn(self, kind: str) -> nn.Module:
        name = "trevsnn_tiny_bptt" if kind == "bptt" else "trevsnn_tiny"
        mode = "none" if kind == "bptt" else "reversible"
        return Heads(self.model(name, mode), final_only=self.args.trevsnn_loss == "final")

    def make_batch(self, B: int) -> Batch:
        g = torch.Generator().manual_seed(self.args.seed + B)
        x = torch.randn(B, 3, self.args.image, self.args.image, generator=g)
        return x, torch.randint(0, self.args.classes, (B,), generator=g)  # x: [B, 3, H, W]

    def drop(self, *names: str) -> None:
        for key in [k for k in self._models if k[0] in names]:
            del self._models[key]

    # ----------------------------------------------------------------------------- rows
    def memory_ratio(self, tag: str, base: Tuple[str, str], rev: Tuple[str, str]) -> Dict:
        b = memory(self.model(*base), self.make_batch, ce_loss, self.args, tag)
        r = memory(self.model(*rev), self.make_batch, ce_loss, self.args, tag)
        return {
            "measured": f"{b['mib_per_image'] / r['mib_per_image']:.2f}x less",
            "details": (f"{base[0]} [{base[1]}] {b['mib_per_image']:.2f} MiB/img, "
                        f"{rev[0]} [{rev[1]}] {r['mib_per_image']:.2f} MiB/img "
                        f"(saved for backward {b['saved_mib_per_image']:.2f} vs "
                        f"{r['saved_mib_per_image']:.2f}); params "
                        f"{params_m(self.model(*base)):.2f}M vs {params_m(self.model(*rev)):.2f}M"),
        }

    def row1(self) -> Dict:
        out = self.memory_ratio("1", ("ms_resnet34", "none"), ("revs_resnet37", "reversible"))
        self.drop("ms_resnet34")
        return out

    def row2(self) -> Dict:
        out = self.memory_ratio("2", ("spikingformer_4_384", "none"),
                                ("revsformer_4_384", "reversible"))
        self.drop("spikingformer_4_384", "revsformer_4_384")
        return out

    def row3(self) -> Dict:
        bp = memory(self.trevsnn("bptt"), self.make_batch, heads_loss, self.args, "3")
        rv = memory(self.trevsnn("rev"), self.make_batch, heads_loss, self.args, "3")
        summary = self.model("trevsnn_tiny", "reversible").memory_summary()
        stored = "/".join(map(str, summary.get("stored_columns", []))) or "none"
        return {
            "measured": f"{bp['mib_per_image'] / rv['mib_per_image']:.2f}x less",
            "details": (f"trevsnn_tiny_bptt {bp['mib_per_image']:.3f} MiB/img, trevsnn_tiny "
                        f"[reversible] {rv['mib_per_image']:.3f} MiB/img (saved "
                        f"{bp['saved_mib_per_image']:.3f} vs {rv['saved_mib_per_image']:.3f}; "
                        f"stored columns: {stored}); loss: {self.args.trevsnn_loss} heads"),
        }

    def row4(self) -> Dict:
        a = self.args
        t = interleaved_times({"bptt": self.trevsnn("bptt"), "rev": self.trevsnn("rev")},
                              self.make_batch(a.time_batch), heads_loss, a, "4")
        return self.time_ratio(t, "bptt", "rev", "trevsnn_tiny_bptt", "trevsnn_tiny [reversible]",
                               as_speedup=True)

    def row5(self) -> Dict:
        """Both spike-input conventions (revsnn.bench.energy.SpikeInput): the measured column
        gives linear_chain, the convention of published SNN energy figures (pw1 in
        pw1(dw1(S(z))) counts SOPs at the rate of S(z)); strict (DESIGN.md §5: ACs only for
        binary inputs) is in the details."""
        a = self.args
        x, _ = digits_images(a.energy_images, 3, a.image, a.classes)  # [n, 3, H, W]
        rep: Dict[str, Dict[str, Any]] = {}
        for rule in (SpikeInput.LINEAR_CHAIN, SpikeInput.STRICT):
            rep[rule.value] = {}
            for kind in ("bptt", "rev"):
                m = self.trevsnn(kind).model
                r = count_synops(m, x.to(a.dev), batch_size=x.shape[0], spike_input=rule)
                rep[rule.value][kind] = r
                progress(f"row 5 {tag_name(m)} [{rule.value}]: {r.energy_mj:.4f} mJ/img")

        def rate(r) -> float:
            rates = [row["firing_rate"] for row in r.rows() if row["spiking_input"]]
            return sum(rates) / len(rates) if rates else float("nan")

        def ratio(rule: str) -> float:
            return rep[rule]["bptt"].energy_mj / rep[rule]["rev"].energy_mj

        b, r = rep["linear_chain"]["bptt"], rep["linear_chain"]["rev"]
        bs, rs = rep["strict"]["bptt"], rep["strict"]["rev"]
        return {
            "measured": (f"{ratio('linear_chain'):.2f}x less (linear_chain); "
                         f"{ratio('strict'):.2f}x (strict)"),
            "details": (f"linear_chain: trevsnn_tiny_bptt {b.energy_mj:.4f} mJ/img (MACs "
                        f"{b.macs:.3g}, ACs {b.acs:.3g}), trevsnn_tiny {r.energy_mj:.4f} mJ/img "
                        f"(MACs {r.macs:.3g}, ACs {r.acs:.3g}); strict: {bs.energy_mj:.4f} vs "
                        f"{rs.energy_mj:.4f} mJ/img; mean binary-input rate {rate(bs):.3f} vs "
                        f"{rate(rs):.3f}; {x.shape[0]} digits images, untrained weights"),
        }

    def row6(self) -> Dict:
        a = self.args
        rev = self.model("revs_resnet37", "reversible")
        para = self.model("pararevsnn_resnet37", "reversible")
        t = interleaved_times({"rev": rev, "para": para}, self.make_batch(a.time_batch),
                              ce_loss, a, "6")
        out = self.time_ratio(t, "para", "rev", "pararevsnn_resnet37", "revs_resnet37",
                              as_speedup=False)
        mr = memory(rev, self.make_batch, ce_loss, a, "6")
        mp = memory(para, self.make_batch, ce_loss, a, "6")
        q = mp["mib_per_image"] / mr["mib_per_image"]
        out["measured"] += f"; memory para/rev {q:.2f}x"
        out["details"] += (f"; memory revs_resnet37 {mr['mib_per_image']:.2f} MiB/img, "
                           f"pararevsnn_resnet37 {mp['mib_per_image']:.2f} MiB/img")
        return out

    def time_ratio(self, t: Dict[str, Dict[str, float]], a: str, b: str, name_a: str,
                   name_b: str, as_speedup: bool) -> Dict:
        """Row text for step times ``t[a]`` vs ``t[b]``: speed-up ``a / b`` or "% less" for
        ``1 - a / b``; the claimed number uses CPU time on CPU, wall clock on CUDA."""
        key = "wall_ms" if self.args.dev.type == "cuda" else "cpu_ms"
        other = "cpu_ms" if key == "wall_ms" else "wall_ms"
        clock = {"wall_ms": "wall", "cpu_ms": "CPU time"}

        def fmt(k: str) -> str:
            q = t[a][k] / t[b][k]
            if not as_speedup:
                return f"{100 * (1 - q):.1f}% less" if q <= 1 else f"{100 * (q - 1):.1f}% more"
            return f"{q:.2f}x faster" if q >= 1 else f"{q:.2f}x, i.e. {1 / q:.2f}x slower"

        return {
            "measured": f"{fmt(key)} ({clock[key]}; {clock[other]}: {fmt(other)})",
            "details": (f"step ms at batch {self.args.time_batch} (wall / CPU): {name_a} "
                        f"{t[a]['wall_ms']:.1f} / {t[a]['cpu_ms']:.1f}, {name_b} "
                        f"{t[b]['wall_ms']:.1f} / {t[b]['cpu_ms']:.1f}; median of "
                        f"{self.args.rounds}x{self.args.repeats} steps"),
        }


CLAIMS = {
    1: ("RevSNN memory: RevSResNet37 (reversible) vs MS-ResNet34", "3.79x less"),
    2: ("RevSNN memory: RevSFormer-4-384 (reversible) vs Spikingformer-4-384", "3.00x less"),
    3: ("T-RevSNN memory: trevsnn_tiny (reversible) vs trevsnn_tiny_bptt", "8.6x less"),
    4: ("T-RevSNN training time: trevsnn_tiny_bptt / trevsnn_tiny (reversible)",
        "2.0x faster"),
    5: ("T-RevSNN inference energy: trevsnn_tiny_bptt / trevsnn_tiny", "1.6x less"),
    6: ("ParaRevSNN training time: pararevsnn_resnet37 vs revs_resnet37 (both reversible)",
        "15.8% less (6.45 -> 5.43 h); 16-18% at 69-165 layers"),
}
KIND = {1: "memory", 2: "memory", 3: "memory", 4: "time", 5: "energy", 6: "time"}


def settings_text(row: int, args: argparse.Namespace) -> str:
    common = f"T={args.T}, {args.image}x{args.image}, float32, {args.threads} thread(s)"
    mem = f"memory slope batch {args.mem_batches[0]}->{args.mem_batches[1]}"
    tim = (f"step time batch {args.time_batch}, median of {args.rounds} rounds x "
           f"{args.repeats} after {args.warmup} warm-up")
    if KIND[row] == "memory":
        return f"{mem}, {common}"
    if KIND[row] == "energy":
        return f"{args.energy_images} digits images, {common}"
    return f"{tim}; {mem}, {common}" if row == 6 else f"{tim}, {common}"


def command_text(row: int, argv: Sequence[str]) -> str:
    """The command that measures this row alone with the same options."""
    kept: List[str] = []
    skip = False
    for tok in argv:
        if skip:
            skip = False
            continue
        if tok == "--only":
            skip = True
            continue
        if tok.startswith("--only=") or tok.startswith("--out"):
            if tok == "--out":
                skip = True
            continue
        kept.append(tok)
    return " ".join(["python benchmarks/claims.py", "--only", str(row)] + kept)


# --------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=None,
                   help="comma-separated row numbers (1-6); default: all")
    p.add_argument("--batch", type=int, default=4,
                   help="memory slope between batch // 2 and batch; also the step-time batch")
    p.add_argument("--time-batch", type=int, default=None,
                   help="step-time batch (default: --batch)")
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--image", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--energy-images", type=int, default=16)
    p.add_argument("--trevsnn-loss", default="all", choices=["all", "final"],
                   help="T-RevSNN training loss: all heads (training) or the final head only")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/claims")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: batch 1->2, 1 round, 2 energy images")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.energy_images = 2, 1, 2
    if args.batch < 2:
        raise ValueError(f"--batch must be >= 2 (memory slope between batch // 2 and batch), "
                         f"got {args.batch}")
    args.mem_batches = (args.batch // 2, args.batch)
    if args.time_batch is None:
        args.time_batch = args.batch
    try:
        args.rows = ROWS if args.only is None else tuple(
            sorted({int(v) for v in args.only.split(",") if v.strip()}))
    except ValueError:
        raise ValueError(f"--only takes row numbers like 1,3,6; got {args.only!r}") from None
    bad = [r for r in args.rows if r not in ROWS]
    if bad or not args.rows:
        raise ValueError(f"--only rows must be among {list(ROWS)}, got {args.only!r}")
    args.dev = torch.device(args.device)
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(args.dev, torch.float32)
    device = f"{env['device']}, torch {env['torch']}"
    progress(f"{env}; rows {list(args.rows)}; batch {args.batch}, T={args.T}, "
             f"{args.image}x{args.image}, threads {args.threads}")
    runner = Claims(args)
    rows: List[Dict[str, Any]] = []
    t_all = time.time()
    for i in args.rows:
        t0 = time.time()
        progress(f"row {i}: {CLAIMS[i][0]}")
        got = getattr(runner, f"row{i}")()
        rows.append({"row": i, "claim": CLAIMS[i][0], "paper": CLAIMS[i][1],
                     "measured": got["measured"], "device": device,
                     "settings": settings_text(i, args), "command": command_text(i, argv),
                     "details": got["details"], "seconds": round(time.time() - t0, 1),
                     "torch": env["torch"], "commit": env["commit"], "dtype": env["dtype"],
                     "batch": args.batch, "T": args.T, "image": args.image})
        progress(f"row {i} done in {time.time() - t0:.0f} s: {got['measured']}")

    header = (f"Claims measured by `python benchmarks/claims.py{' ' if argv else ''}"
              f"{' '.join(argv)}` on {device}, commit {env['commit']}, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
              f"({time.time() - t_all:.0f} s). Memory = peak live tensors of one training step "
              f"per image (slope between two batch sizes); ratios are ours on the same "
              f"comparison, not the papers' GPU set-ups.")
    table = markdown_table([{HEADERS[c]: r[c] for c in COLUMNS} for r in rows],
                           [HEADERS[c] for c in COLUMNS])
    text = f"{header}\n\n{table}\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "claims.md").write_text(text)
    write_csv(rows, out / "claims.csv")
    print(text)
    progress(f"wrote {out / 'claims.md'} and {out / 'claims.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
