"""The autograd side of the temporal-reversible columns (see :mod:`revsnn.reversible.columns`).

- :class:`ColumnFunction`: REVERSIBLE mode. Per column t (last to first) and level k (top down)::

      out = L_k^t(c_{k-1}^t, c_{k+1}^{t-1})            recomputed with grad
      c_k^{t-1} = (c_k^t - out) / alpha_k^t              rebuilt (or taken from storage)
      d alpha_k^t = sum(dc_k^t * c_k^{t-1}),  dc_k^{t-1} += alpha_k^t dc_k^t,
      (dc_{k-1}^t, dc_{k+1}^{t-1}, d theta) += (d out / d (...))^T dc_k^t

  Transformed weights (weight standardisation, :mod:`revsnn.reversible.weights`) are computed
  once in the forward and once (with a graph) in the backward, lent to every column as leaves
  ``W_hat``; their gradients are summed over the columns and go through the transform once.

- :class:`CheckpointedColumn`: one column for ``torch.utils.checkpoint`` (CHECKPOINT mode).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

from .state import frozen_norm_stats
from .weights import LentWeights

if TYPE_CHECKING:
    from .columns import TemporalColumns

__all__ = ["ColumnFunction", "CheckpointedColumn"]


@contextlib.contextmanager
def _aliased_parameters(module: torch.nn.Module, skip: set):
    """Inside the block every trainable parameter of ``module`` (not in ``skip``) is replaced by
    a detached alias requiring grad; yields ``[(parameter, alias)]`` (each parameter once).
    A lighter ``torch.func.functional_call``: gradients are taken with respect to the
    aliases, so hooks on the real parameters never see per-level partial sums."""
    slots, aliases = [], {}
    modules = getattr(module, "modules", None)
    for mod in (modules() if modules is not None else ()):
        for name, p in mod._parameters.items():
            if p is None or not p.requires_grad or id(p) in skip:
                continue
            if id(p) not in aliases:
                aliases[id(p)] = (p, p.detach().requires_grad_(True))
            slots.append((mod, name, p))
    try:
        for mod, name, p in slots:
            mod._parameters[name] = aliases[id(p)][1]
        yield list(aliases.values())
    finally:
        for mod, name, p in slots:
            mod._parameters[name] = p


def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None:
        return b
    return a if b is None else a + b



class CheckpointedColumn:
    """One column for ``torch.utils.checkpoint``; its recomputation keeps BN statistics."""

    def __init__(self, engine: TemporalColumns, t: int) -> None:
        self.engine = engine
        self.t = t
        self.calls = 0

    def __call__(self, s_t: torch.Tensor, *c_prev: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        self.calls += 1
        frozen = (frozen_norm_stats(*self.engine.levels[self.t]) if self.calls > 1
                  else contextlib.nullcontext())
        with frozen:
            c, _ = self.engine._column(self.t, s_t, list(c_prev) if c_prev else None)
        return tuple(c)


class ColumnFunction(torch.autograd.Function):
    """REVERSIBLE mode of :class:`~revsnn.reversible.columns.TemporalColumns`: the forward keeps
    the inputs, the last column's states and what the storing policy chose; the backward walks
    the columns last to first, recomputing every level once with grad (top level down),
    rebuilding ``c^{t-1} = (c^t - L^t) / alpha^t`` and back-propagating through that level."""

    @staticmethod
    def forward(ctx, engine: TemporalColumns, n_s: int, *inputs: torch.Tensor):
        s_list, params = list(inputs[:n_s]), inputs[n_s:]
        mods = engine._level_modules()
        res = engine._reversible_forward(s_list, LentWeights(engine._steps(mods)), mods)
        stored_cols = sorted(res["stored"])
        fix_keys = sorted(res["fixups"])
        tensors = list(s_list) + list(res["c_last"])
        for j in stored_cols:
            tensors += res["stored"][j]
        for key in fix_keys:
            tensors += list(res["fixups"][key])
        ctx.save_for_backward(*tensors)
        ctx.engine, ctx.n_s, ctx.params, ctx.mods = engine, n_s, params, mods
        ctx.states, ctx.stored_cols, ctx.fix_keys = res["states"], stored_cols, fix_keys
        ctx.set_materialize_grads(False)
        return tuple(res["outputs"])

    @staticmethod
    @once_differentiable
    def backward(ctx, *g_out: Optional[torch.Tensor]):
        eng: TemporalColumns = ctx.engine
        T, L, n_s = eng.T, eng.L, ctx.n_s
        cd = eng._dtypes()[0]
        try:
            saved = list(ctx.saved_tensors)
        except RuntimeError as err:
            raise RuntimeError(
                "backward through TemporalColumns a second time: its saved states were freed by "
                "the first backward; pass retain_graph=True to the first backward"
            ) from err
        s_list, saved = saved[:n_s], saved[n_s:]
        c_t, saved = saved[:L], saved[L:]
        stored = {}
        for j in ctx.stored_cols:
            stored[j], saved = saved[:L], saved[L:]
        fixups = {key: (saved[2 * i], saved[2 * i + 1]) for i, key in enumerate(ctx.fix_keys)}
        s_grad = [ctx.needs_input_grad[2 + i] for i in range(n_s)]
        index = {id(p): i for i, p in enumerate(ctx.params)}
        grads: List[Optional[torch.Tensor]] = [None] * len(ctx.params)
        ds: List[Optional[torch.Tensor]] = [None] * n_s
        dc: List[Optional[torch.Tensor]] = [None] * L

        def accumulate(p_id: int, g: Optional[torch.Tensor]) -> None:
            i = index.get(p_id)
            if i is not None and g is not None:
                grads[i] = _add(grads[i], g)

        # Transformed weights: one W_hat per module, lent as a leaf to every level that uses it
        # (shared ones to every column); their own parameters stay out of the aliasing.
        mods = ctx.mods
        weights = LentWeights(eng._steps(mods, reverse=True), leaves=True)
        transformed = {id(p) for col in mods for ms in col for m in ms
                       for p in m.transform_parameters()}
        for t in reversed(range(T)):
            si = t if n_s > 1 else 0
            if g_out[t] is not None:  # the readout of this column's top state
                top = c_t[L - 1].detach().to(cd).requires_grad_(True)
                with torch.enable_grad(), _aliased_parameters(eng.readout, set()) as named:
                    r = eng._readout(t, top)
                if r.requires_grad:
                    gs = torch.autograd.grad(r, [top] + [a for _, a in named], g_out[t],
                                             allow_unused=True)
                    dc[L - 1] = _add(dc[L - 1], gs[0])
                    for (p, _), gp in zip(named, gs[1:]):
                        accumulate(id(p), gp)
            c_p: List[Optional[torch.Tensor]] = (
                list(stored[t - 1]) if t - 1 in stored else [None] * L
            )
            dc_p: List[Optional[torch.Tensor]] = [None] * L
            for k in reversed(range(L)):
                alpha = eng.alpha[t][k]
                need_lower = k > 0 or s_grad[si]
                # Leaves in the compute dtype: the state gradients stay in it (only the states
                # and their alpha recurrence use the wider state dtype).
                lower = s_list[si] if k == 0 else c_t[k - 1]
                lower = lower.detach().to(cd).requires_grad_(need_lower)
                upper = c_p[k + 1] if (t > 0 and k < L - 1) else None
                if upper is not None:
                    upper = upper.detach().to(cd).requires_grad_(True)
                with weights.lend(mods[t][k]) as w_hats:
                    out, named = _recompute(ctx, t, k, lower, upper, transformed)
                if t > 0 and t - 1 not in stored:  # rebuild c_k^{t-1} by the inverse
                    c_p[k] = _rebuild(c_t[k], out, alpha, fixups.get((t - 1, k)))
                g = dc[k]
                if g is not None and alpha.requires_grad:  # c_k^t = out + alpha * c_k^{t-1}
                    prev = c_p[k] if t > 0 else torch.zeros_like(g)
                    accumulate(id(alpha), (g * prev.to(g.dtype)).sum_to_size(alpha.shape))
                if g is not None and t > 0:
                    dc_p[k] = _add(dc_p[k], g * alpha.detach())
                if g is not None and out.requires_grad:
                    lent = [(m, w) for m, w in zip(mods[t][k], w_hats) if w.requires_grad]
                    inputs = [x for x in (lower if need_lower else None, upper) if x is not None]
                    gs = torch.autograd.grad(
                        out, inputs + [a for _, a in named] + [w for _, w in lent], g,
                        allow_unused=True,
                    )
                    i = 0
                    if need_lower:
                        if k == 0:
                            ds[si] = _add(ds[si], gs[0])
                        else:
                            dc[k - 1] = _add(dc[k - 1], gs[0])
                        i = 1
                    if upper is not None:
                        dc_p[k + 1] = _add(dc_p[k + 1], gs[i])
                        i += 1
                    for (p, _), gp in zip(named, gs[i:]):
                        accumulate(id(p), gp)
                    for (m, _), gw in zip(lent, gs[i + len(named):]):
                        weights.add_grad(m, gw)
                for p_id, gp in weights.release(mods[t][k]).items():  # last use: W_hat -> W
                    accumulate(p_id, gp)
            c_t, dc = c_p, dc_p
        return (None, None, *ds, *grads)


def _recompute(ctx, t: int, k: int, lower: torch.Tensor, upper: Optional[torch.Tensor],
               transformed: set):
    """``out = L_k^t(lower, upper)`` with grad, as in the forward (RNG and autocast replayed, BN
    statistics frozen). Parameters enter as detached aliases, so gradients are taken with
    respect to the aliases and hooks on the real parameters fire once, on the total returned by
    the backward; parameters of transformed weights (lent by the caller) are left out. Returns
    (out, [(parameter, alias)])."""
    eng = ctx.engine
    level = eng.levels[t][k]
    with torch.enable_grad(), ctx.states[t][k].replay(), frozen_norm_stats(level), \
            _aliased_parameters(level, transformed) as named:
        out = level(lower, upper).to(eng._dtypes()[0])
    eng.recompute_count += 1
    return out, named


@torch.no_grad()
def _rebuild(c_k: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor,
             fixup: Optional[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``c_k^{t-1} = (c_k^t - out) / alpha``, with the stored exact values written back."""
    rebuilt = (c_k - out.detach()) / alpha.detach()
    if fixup is not None:
        idx, val = fixup
        # idx are row-major (logical) positions: write through a contiguous layout (a
        # channels_last state has no flat view)
        rebuilt = rebuilt.contiguous()
        rebuilt.view(-1)[idx] = val
    return rebuilt
