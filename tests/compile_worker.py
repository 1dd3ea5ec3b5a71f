"""Run by tests/test_compile.py in a subprocess (TorchDynamo and inductor state stay out of the
test process): ``python compile_worker.py KIND MODEL:MODE ...`` prints one JSON line per case.

KIND ``train``: one training step of the eager model and of the same model compiled in place
(``revsnn.models.compile.compile_model``, inductor), from the same weights and batch; reports
the largest relative difference of the gradients and of the BatchNorm buffers, and the number
of recomputations each engine ran in the compiled backward.
The backward is profiled: ``compiled_in_backward`` counts the compiled regions that ran inside
it (the engines' recomputations run compiled units).
KIND ``fit``: ``revsnn.train.fit(..., compile=True)`` for two steps of MODEL on random images,
reporting the summary's compile and epoch times and the printed lines.
KIND ``explain``: ``torch._dynamo.explain`` of every compile unit on the inputs it receives in
an eager forward (graph and break counts per unit), and of the whole model.
"""

from __future__ import annotations

import copy
import json
import sys

import torch

import revsnn
from revsnn.models.compile import compile_model, compile_units

torch.set_num_threads(1)


def _batch(name: str):
    info = revsnn.model_info(name)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, info.in_channels, info.image_size, info.image_size, generator=g)
    return x, torch.tensor([1, 3])


def _step(model, x, y):
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return float(loss)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / (a.abs().max() + 1e-12))


def _recomputes(model) -> int:
    return sum(int(getattr(m, "recompute_count", 0)) for m in model.modules())


def train(name: str, mode: str) -> dict:
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode=mode)
    x, y = _batch(name)
    eager, comp = copy.deepcopy(m), copy.deepcopy(m)
    le = _step(eager, x, y)
    compile_model(comp)
    loss = torch.nn.functional.cross_entropy(comp(x), y)
    lc = float(loss)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        loss.backward()
    in_backward = sum(1 for e in prof.events() if e.name.startswith("Torch-Compiled Region"))
    grads = [_rel(a.grad, b.grad) for a, b in zip(eager.parameters(), comp.parameters())
             if a.grad is not None]
    missing = sum((a.grad is None) != (b.grad is None)
                  for a, b in zip(eager.parameters(), comp.parameters()))
    bufs = [_rel(a.float(), b.float()) for a, b in zip(eager.buffers(), comp.buffers())]
    from torch._dynamo.utils import counters

    return {"model": name, "mode": mode, "loss": [le, lc], "grad_rel": max(grads),
            "buffer_rel": max(bufs, default=0.0), "grad_missing": missing,
            "n_grads": len(grads), "recomputes": [_recomputes(eager), _recomputes(comp)],
            "compiled_in_backward": in_backward,
            "unique_graphs": counters["stats"]["unique_graphs"]}


def explain(name: str, mode: str) -> dict:
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode=mode)
    x, _ = _batch(name)
    units = compile_units(m)
    seen: dict = {}

    def keep(n, args):
        seen.setdefault(n, tuple(a.detach().requires_grad_(a.requires_grad)
                                 if isinstance(a, torch.Tensor) else a for a in args))

    hooks, fns = [], {}
    for n, u in units.items():
        if n.endswith(".body"):  # a recomputed part's body
            fns[n] = type(u).body.__get__(u)
            u.body = (lambda *a, n=n: (keep(n, a), fns[n](*a))[1])
        else:
            fns[n] = u
            hooks.append(u.register_forward_pre_hook(lambda mod, args, n=n: keep(n, args)))
    m.forward_heads(x) if hasattr(m, "forward_heads") else m(x)
    for h in hooks:
        h.remove()
    for n, u in units.items():
        if n.endswith(".body"):
            del u.body
    out = {}
    for n, args in seen.items():
        ex = torch._dynamo.explain(fns[n])(*args)
        out[n] = [ex.graph_count, ex.graph_break_count]
    ex = torch._dynamo.explain(m)(x)
    reasons = sorted({b.reason.split("\n")[0][:120] for b in ex.break_reasons})
    return {"model": name, "mode": mode, "units": out, "not_called": sorted(set(units) - set(seen)),
            "model_graphs": ex.graph_count, "model_breaks": ex.graph_break_count,
            "model_break_reasons": reasons}


def fit_run(name: str, mode: str) -> dict:
    """Two steps of fit(compile=True) on batches shaped as in ``train`` (the graphs compiled
    there are in the inductor cache), no test set."""
    import tempfile

    from torch.utils.data import TensorDataset

    from revsnn.train import fit

    info = revsnn.model_info(name)
    g = torch.Generator().manual_seed(0)
    n = info.image_size
    data = TensorDataset(torch.rand(4, info.in_channels, n, n, generator=g),
                         torch.tensor([0, 1, 2, 3]))
    torch.manual_seed(0)
    model = revsnn.create_model(name, memory_mode=mode)
    lines: list = []
    with tempfile.TemporaryDirectory() as out:
        s = fit(model, data, None, out=out, log=lines.append, compile=True, T=info.T, epochs=1,
                batch_size=2, max_steps=2, progress=False, measure_memory=False,
                memory_mode=mode, normalize=False, warmup_epochs=0)
    return {"model": name, "mode": mode, "compile_time_s": s["compile_time_s"],
            "epoch_times_s": s["epoch_times_s"], "status": s["status"], "lines": lines}


if __name__ == "__main__":
    kind = sys.argv[1]
    run = {"train": train, "explain": explain, "fit": fit_run}[kind]
    for case in sys.argv[2:]:
        model, mode = case.split(":")
        result = run(model, mode)
        print(json.dumps(result), flush=True)
        torch._dynamo.reset()
