"""Three-mode runner for whole models (RevSResNet, RevSFormer, baselines)."""

from __future__ import annotations

import copy
from typing import Dict

import torch
from torch import nn


def run_step(model: nn.Module, mode: str, x: torch.Tensor, seed: int = 3, lr: float = 0.1) -> Dict:
    """Forward + weighted-sum loss + backward + one SGD step on a copy of ``model`` in ``mode``.

    Returns logits, input gradient, parameter gradients, parameters and buffers after the step.
    """
    m = copy.deepcopy(model)
    m.set_memory_mode(mode)
    m.train()
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    y = m(xr)
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * w).sum().backward()
    grads = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    torch.optim.SGD(m.parameters(), lr=lr).step()
    return dict(
        y=y.detach(),
        dx=xr.grad,
        grads=grads,
        params={n: p.detach().clone() for n, p in m.named_parameters()},
        bufs={n: b.detach().clone() for n, b in m.named_buffers()},
        model=m,
    )


def max_rel(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """Largest per-tensor relative difference; a tensor's scale is floored at 1e-3 of the
    largest entry over all tensors (a conv bias in front of BN has an exactly-zero true
    gradient, so its computed value is pure rounding noise)."""
    assert a.keys() == b.keys()
    scale = max(float(t.abs().max()) for t in b.values())
    worst = 0.0
    for k in b:
        ref = float(b[k].abs().max())
        err = float((a[k].double() - b[k].double()).abs().max())
        worst = max(worst, err / max(ref, 1e-3 * scale, 1e-300))
    return worst


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def assert_modes_agree(model: nn.Module, x: torch.Tensor, modes, tol: float) -> Dict[str, Dict]:
    """NONE is the oracle: equal logits, input/parameter gradients, parameters after a step
    and BatchNorm buffers for every mode in ``modes``."""
    ref = run_step(model, "none", x)
    out = {"none": ref}
    for mode in modes:
        r = run_step(model, mode, x)
        assert torch.equal(r["y"], ref["y"]), f"{mode}: logits differ"  # forward is identical
        assert rel(r["dx"], ref["dx"]) <= tol, (mode, rel(r["dx"], ref["dx"]))
        assert max_rel(r["grads"], ref["grads"]) <= tol, (mode, max_rel(r["grads"], ref["grads"]))
        assert r["grads"].keys() == ref["grads"].keys()
        assert max_rel(r["params"], ref["params"]) <= tol
        for k, v in ref["bufs"].items():
            assert torch.equal(r["bufs"][k], v), f"{mode}: buffer {k} differs"
        out[mode] = r
    return out


def global_rel(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """||a - b|| / ||b|| over all tensors together."""
    da = torch.cat([(a[k].double() - b[k].double()).flatten() for k in b])
    db = torch.cat([b[k].double().flatten() for k in b])
    return float(da.norm() / db.norm())
