"""REVERSIBLE mode of :class:`~revsnn.reversible.columns.TemporalColumns`: one autograd
Function per column plus a join.

Column t's Function maps ``(s^t, c^{t-1}, theta^t)`` to ``(c^t, r^t)`` (its states and its
readout) without a graph and saves only what the storing policy asks for (the exact previous
states, or sparse fix-ups of them). The join saves the last column's states and passes the
readouts through. The backward runs the columns last to first; in column t (top level down)::

    r^t = R^t(c_top^t)                                  recomputed with grad
    out = L_k^t(c_{k-1}^t, c_{k+1}^{t-1})               recomputed with grad
    c_k^{t-1} = (c_k^t - out) / alpha_k^t               rebuilt (or taken from storage)
    d alpha_k^t = sum(dc_k^t * c_k^{t-1}),   dc_k^{t-1} += alpha_k^t dc_k^t,
    (dc_{k-1}^t, dc_{k+1}^{t-1}, d theta) += (d out / d (...))^T dc_k^t

then hands the rebuilt ``c^{t-1}`` to column t - 1 and returns its parameters' gradients, so
they are accumulated (hooks fire once, DDP reduces) and freed column by column. Every
recomputation goes through the recompute core (:mod:`revsnn.reversible.recompute`).
Transformed weights (weight standardisation, :mod:`revsnn.reversible.weights`) are computed
once per pass and lent to every column that uses them; in the backward they are leaves whose
gradients are summed over the columns and taken through the transform once, at the last use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..recompute import Part, refuse_create_graph, trainable_parameters, vjp
from ..state import RecomputeState
from ..weights import LentWeights
from .policy import Decision, RebuildPolicy, apply_fixup
from .recurrence import inverse_step

if TYPE_CHECKING:
    from .engine import TemporalColumns

__all__ = ["run_reversible"]


def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None:
        return b
    return a if b is None else a + b


class _Plan:
    """What the column Functions of one REVERSIBLE forward share: the engine, the readouts,
    the storing policy, the recompute states, and in the backward the states being rebuilt
    (``link``) and the lent transformed weights."""

    def __init__(self, engine: TemporalColumns, readouts: Optional[Sequence[nn.Module]],
                 policy: RebuildPolicy) -> None:
        self.engine = engine
        self.readouts = readouts
        self.policy = policy
        self.mods = engine.level_transforms()
        self.weights = LentWeights(engine.transform_steps(self.mods))
        self.states: Dict[int, List[RecomputeState]] = {}
        self.readout_states: Dict[int, RecomputeState] = {}
        self.link: List[Optional[torch.Tensor]] = []
        self.back_weights: Optional[LentWeights] = None

    def readout_part(self, t: int) -> Optional[Part]:
        """The readout of column t as a part (``None``: the identity readout)."""
        if self.readouts is None:
            return None
        return Part([self.readouts[t]], self.engine.preserve_rng_state, f"readout of column {t}")

    def reads(self, t: int) -> bool:
        return self.readouts is None or self.readouts[t] is not None


class _ColumnFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, plan: _Plan, t: int, n_prev: int, s_t: torch.Tensor, *rest: torch.Tensor):
        eng = plan.engine
        c_prev = list(rest[:n_prev]) if n_prev else None
        states: List[RecomputeState] = []
        c, outs = eng.column(t, s_t, c_prev, weights=plan.weights, mods=plan.mods,
                             states=states)
        plan.states[t] = states
        part = plan.readout_part(t)
        r: Optional[torch.Tensor] = None
        if part is None:
            r = eng.readout_input(c[-1])
        elif plan.reads(t):
            with part.run(c[-1]) as state:
                r = plan.readouts[t](eng.readout_input(c[-1]))
            plan.readout_states[t] = state
        decision: Decision = plan.policy.step(t, c, outs, c_prev, eng.alpha[t])
        fix_keys = sorted(decision.fixups)
        tensors = [s_t] + (decision.stored or [])
        for k in fix_keys:
            tensors += list(decision.fixups[k])
        ctx.save_for_backward(*tensors)
        ctx.plan, ctx.t, ctx.n_prev = plan, t, n_prev
        ctx.stored, ctx.fix_keys = decision.stored is not None, fix_keys
        ctx.params = rest[n_prev:]
        ctx.set_materialize_grads(False)
        return (*c, r)

    @staticmethod
    def backward(ctx, *grads: Optional[torch.Tensor]):
        plan: _Plan = ctx.plan
        eng, t = plan.engine, ctx.t
        L = eng.L
        refuse_create_graph(f"TemporalColumns column {t}")
        cd = eng.dtypes()[0]
        saved = list(ctx.saved_tensors)
        s_t = saved[0]
        stored = saved[1:1 + L] if ctx.stored else None
        rest = saved[1 + (L if ctx.stored else 0):]
        fixups = {k: (rest[2 * i], rest[2 * i + 1]) for i, k in enumerate(ctx.fix_keys)}
        c_t = plan.link
        dc: List[Optional[torch.Tensor]] = list(grads[:L])
        d_r = grads[L] if plan.reads(t) else None
        p_grads: Dict[int, torch.Tensor] = {}

        def accumulate(params: Sequence[torch.Tensor], gs: Sequence[Optional[torch.Tensor]]):
            for p, g in zip(params, gs):
                if g is not None:
                    p_grads[id(p)] = _add(p_grads.get(id(p)), g)

        # the readout of this column's top state
        if d_r is not None:
            part = plan.readout_part(t)
            if part is None:
                dc[L - 1] = _add(dc[L - 1], d_r)
            else:
                top = eng.readout_input(c_t[L - 1]).detach().requires_grad_(True)
                with part.replay(plan.readout_states[t]) as aliases:
                    outs = [plan.readouts[t](top)]
                (g_top,), d_p, _ = vjp(outs, [d_r], [top], aliases, part.name)
                del top
                dc[L - 1] = _add(dc[L - 1], g_top)
                accumulate(aliases.params, d_p)

        weights = plan.back_weights
        mods = plan.mods
        n_s_grad = ctx.needs_input_grad[3]
        ds: Optional[torch.Tensor] = None
        c_p: List[Optional[torch.Tensor]] = list(stored) if stored is not None else [None] * L
        dc_p: List[Optional[torch.Tensor]] = [None] * L
        for k in reversed(range(L)):
            alpha = eng.alpha[t][k]
            need_lower = k > 0 or n_s_grad
            lower = (s_t if k == 0 else c_t[k - 1]).detach().to(cd).requires_grad_(need_lower)
            upper = c_p[k + 1] if (t > 0 and k < L - 1) else None
            if upper is not None:
                upper = upper.detach().to(cd).requires_grad_(True)
            part = eng.level_part(t, k)
            lent = [p for m in mods[t][k] for p in m.transform_parameters()]
            with part.replay(plan.states[t][k], lent=lent) as aliases, \
                    weights.lend(mods[t][k]) as w_hats:
                outs = [eng.level(t, k, lower, upper, state_dtype=False)]
            out = outs[0].detach()
            if t > 0 and stored is None:  # rebuild c_k^{t-1} by the inverse
                c_p[k] = apply_fixup(inverse_step(c_t[k], out, alpha.detach()), fixups.get(k))
            del out
            g = dc[k]
            if g is not None and alpha.requires_grad:  # c_k^t = out + alpha * c_k^{t-1}
                prev = c_p[k] if t > 0 else torch.zeros_like(g)
                accumulate([alpha], [(g * prev.to(g.dtype)).sum_to_size(alpha.shape)])
            if g is not None and t > 0:
                dc_p[k] = _add(dc_p[k], g * alpha.detach().to(g.dtype))
            lent_leaves = [w for w in w_hats if w.requires_grad]
            lent_mods = [m for m, w in zip(mods[t][k], w_hats) if w.requires_grad]
            if g is not None:
                (g_low, g_up), d_p, d_w = vjp(outs, [g.to(outs[0].dtype)], [lower, upper],
                                              aliases, part.name, extra=lent_leaves)
                if g_low is not None:
                    if k == 0:
                        ds = _add(ds, g_low)
                    else:
                        dc[k - 1] = _add(dc[k - 1], g_low)
                if g_up is not None:
                    dc_p[k + 1] = _add(dc_p[k + 1], g_up)
                accumulate(aliases.params, d_p)
                for m, gw in zip(lent_mods, d_w):
                    weights.add_grad(m, gw)
            del outs, lower, upper
            for p_id, gp in weights.release(mods[t][k]).items():  # last use: W_hat -> W
                p_grads[p_id] = _add(p_grads.get(p_id), gp)
        plan.link = c_p
        d_prev = dc_p if ctx.n_prev else []
        return (None, None, None, ds, *d_prev, *(p_grads.get(id(p)) for p in ctx.params))


class _JoinFunction(torch.autograd.Function):
    """Save the last column's states; pass the readouts through (the first node of the
    columns' backward, which hands the saved states to the last column)."""

    @staticmethod
    def forward(ctx, plan: _Plan, L: int, *args: torch.Tensor):
        c_last, rs = args[:L], args[L:]  # the readouts that exist
        ctx.save_for_backward(*c_last)
        ctx.plan, ctx.L = plan, L
        plan.engine.last_report = plan.policy.finish()
        ctx.set_materialize_grads(False)
        return tuple(r.view_as(r) for r in rs)

    @staticmethod
    def backward(ctx, *d_r: Optional[torch.Tensor]):
        plan: _Plan = ctx.plan
        refuse_create_graph("TemporalColumns")
        try:
            c_last = list(ctx.saved_tensors)
        except RuntimeError as err:
            raise RuntimeError(
                "backward through TemporalColumns a second time: its saved states were freed by "
                "the first backward; pass retain_graph=True to the first backward"
            ) from err
        plan.link = c_last
        plan.back_weights = LentWeights(plan.engine.transform_steps(plan.mods, reverse=True),
                                        leaves=True)
        return (None, None, *([None] * ctx.L), *d_r)


def run_reversible(engine: TemporalColumns, s_list: List[torch.Tensor],
                   readouts: Optional[Sequence[nn.Module]]) -> List[torch.Tensor]:
    """The T columns in REVERSIBLE mode; returns every column's readout."""
    policy = RebuildPolicy(
        engine.T, engine.L, engine.tolerance_value(), engine.thresholds, engine.store_every,
        engine.dtypes()[1], int(s_list[0].shape[0]),
    )
    plan = _Plan(engine, readouts, policy)
    c_prev: List[torch.Tensor] = []
    rs = []
    for t in range(engine.T):
        s_t = s_list[t if len(s_list) > 1 else 0]
        params = trainable_parameters(
            [engine.levels[t], engine.alpha[t], readouts[t] if readouts is not None else None]
        )
        out = _ColumnFunction.apply(plan, t, len(c_prev), s_t, *c_prev, *params)
        c_prev, r = list(out[:engine.L]), out[engine.L]
        rs.append(r)
    joined = iter(_JoinFunction.apply(plan, engine.L, *c_prev, *(r for r in rs if r is not None)))
    return [next(joined) if r is not None else None for r in rs]
