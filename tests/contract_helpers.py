"""Registry-wide helpers for the recompute-contract tests: the tiny model of every family, its
memory modes, a deterministic input and loss, and one instrumented training step."""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

import revsnn
from revsnn_model_helpers import max_rel  # noqa: F401 (re-exported for the tests)

#: the tiny variant of every registered family
MODELS: List[str] = revsnn.list_models("*_test")


def build(name: str, dtype=torch.float64, **kw) -> nn.Module:
    """The model ``name`` in ``none`` mode, seeded, in ``dtype`` and training mode."""
    torch.manual_seed(0)
    return revsnn.create_model(name, memory_mode="none", **kw).to(dtype).train()


def modes(model: nn.Module) -> List[str]:
    """The memory modes the model declares."""
    return [m.value for m in model.supported_modes]


def example(model: nn.Module, batch: int = 2, size: int = 8, dtype=torch.float64) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(batch, model.in_channels, size, size, dtype=dtype)


def outputs(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """Every head the training loss uses (one for most models, one per column for T-RevSNN)."""
    if hasattr(model, "forward_heads"):
        return list(model.forward_heads(x))
    return [model(x)]


def loss_of(outs: List[torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for i, y in enumerate(outs):
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
        total = total + (i + 1) * (y * w).sum() + 0.1 * (y * y).sum()
    return total


def step(model: nn.Module, mode: str, x: torch.Tensor, seed: int = 5,
         edit: Optional[Callable[[nn.Module], None]] = None,
         hooks: bool = False, autocast: Optional[torch.dtype] = None,
         autocast_cache: bool = True) -> Dict:
    """One forward + backward of a copy of ``model`` in ``mode`` (the forward under CPU
    autocast to ``autocast`` when given; the backward outside it, as PyTorch recommends).
    With ``hooks``, every
    trainable parameter gets a tensor hook halving its gradient and a post-accumulate hook;
    both count their calls (and record a ``None`` gradient if one ever arrives)."""
    m = copy.deepcopy(model)
    if edit is not None:
        edit(m)
    m.set_memory_mode(mode)
    calls: Dict[str, int] = {}
    post: Dict[str, int] = {}
    nones: List[str] = []
    if hooks:
        for n, p in m.named_parameters():
            if not p.requires_grad:
                continue

            def hook(g, n=n):
                calls[n] = calls.get(n, 0) + 1
                if g is None:
                    nones.append(n)
                    return None
                return 0.5 * g

            def after(p, n=n):
                post[n] = post.get(n, 0) + 1

            p.register_hook(hook)
            p.register_post_accumulate_grad_hook(after)
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None,
                        cache_enabled=autocast_cache):
        outs = outputs(m, xr)
        loss = loss_of(outs)
    loss.backward()
    return dict(
        outs=[o.detach() for o in outs], dx=xr.grad,
        grads={n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None},
        bufs={n: b.detach().clone() for n, b in m.named_buffers()},
        calls=calls, post=post, nones=nones, model=m,
    )


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_same(got: Dict, ref: Dict, tol: float, what: str) -> None:
    for a, b in zip(got["outs"], ref["outs"]):
        assert rel(a, b) <= tol, (what, "outputs", rel(a, b))
    assert rel(got["dx"], ref["dx"]) <= tol, (what, "input gradient", rel(got["dx"], ref["dx"]))
    assert max_rel(got["grads"], ref["grads"]) <= tol, (what, max_rel(got["grads"], ref["grads"]))
    for k, v in ref["bufs"].items():
        assert torch.allclose(got["bufs"][k].double(), v.double(), rtol=tol, atol=0), (what, k)


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``old`` is registered inside ``root``."""
    slots = [(parent, key) for _, parent in root.named_modules()
             for key, child in parent._modules.items() if child is old]
    assert slots, "module not found"
    for parent, key in slots:
        parent._modules[key] = new
