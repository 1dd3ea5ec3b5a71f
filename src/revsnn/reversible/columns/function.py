"""REVERSIBLE mode of :class:`~revsnn.reversible.columns.TemporalColumns`: one autograd
Function per level of every column, plus a join.

Level ``(t, k)`` maps ``(c_{k-1}^t, c_{k+1}^{t-1}, c_k^{t-1}, theta_k^t)`` (lower, upper,
previous state; ``c_{-1}^t = s^t``) to ``c_k^t`` without a graph and saves nothing but what the
storing policy asks for; the top level of a column also returns the column's readout ``r^t``.
The join saves the last column's states and passes the readouts through. Autograd sums the
gradient of every state from its three readers (as in plain autograd), and runs the levels in
an order that makes every state available when it is needed: the level that rebuilds
``c_k^t`` -- ``(t+1, k)`` -- reads ``c_{k+1}^t`` and ``c_k^t``, so it runs before both levels
that need the value ``c_k^t`` (``(t, k+1)`` and ``(t, k)``) and before ``(t+1, k-1)``. In the
backward of level ``(t, k)``::

    out = L_k^t(c_{k-1}^t, c_{k+1}^{t-1})               recomputed with grad
    c_k^{t-1} = (c_k^t - out) / alpha_k^t               rebuilt (or taken from storage)
    d alpha_k^t = sum(dc_k^t * c_k^{t-1}),   dc_k^{t-1} = alpha_k^t dc_k^t
    (dc_{k-1}^t, dc_{k+1}^{t-1}, d theta) = (d out / d (...))^T dc_k^t

and the top level first recomputes the readout ``r^t = R^t(c_{L-1}^t)`` and adds its gradient.
Each level returns its parameters' gradients, so they are accumulated (hooks fire once, DDP
reduces) and freed level by level. Every recomputation goes through the recompute core
(:mod:`revsnn.reversible.recompute`). Transformed weights (weight standardisation,
:mod:`revsnn.reversible.weights`) are computed once per pass and lent to every level that uses
them; in the backward they are leaves whose gradients are summed over their uses and taken
through the transform once, at the last use.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..recompute import Part, refuse_create_graph, trainable_parameters, vjp
from ..state import RecomputeState
from ..weights import LentWeights
from .levels import ColumnMaths
from .policy import ColumnReport, Decision, Fixup, RebuildPolicy, apply_fixup
from .recurrence import inverse_step

__all__ = ["run_reversible"]

Key = Tuple[int, int]  # (column t, level k)


def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None:
        return b
    return a if b is None else a + b


class _Pass:
    """What the level Functions of one REVERSIBLE pass share: the per-level maths, the readouts, the
    storing policy, the recompute states, and in the backward the states being rebuilt
    (``link[(t, k)] = c_k^t``), the stored states and fix-ups handed from a column's top level
    to its other levels, and the lent transformed weights."""

    def __init__(self, maths: ColumnMaths, readouts: Optional[Sequence[nn.Module]],
                 policy: RebuildPolicy) -> None:
        self.maths = maths
        self.readouts = readouts
        self.policy = policy
        self.mods = maths.level_transforms()
        self.weights = LentWeights(maths.transform_steps(self.mods))
        self.states: Dict[Key, RecomputeState] = {}
        self.readout_states: Dict[int, RecomputeState] = {}
        self.column_outs: List[torch.Tensor] = []  # level outputs of the column being built
        self.link: Dict[Key, torch.Tensor] = {}
        self.exact: Dict[Key, torch.Tensor] = {}  # stored c_k^{t-1}, keyed (t - 1, k)
        self.fixups: Dict[Key, Fixup] = {}  # fix-ups of rebuilt c_k^{t-1}, keyed (t - 1, k)
        self.back_weights: Optional[LentWeights] = None
        self.link_forward: Dict[Key, torch.Tensor] = {}  # c_k^t of the columns t-1, t (forward)
        self.report = ColumnReport()  # the storing policy's report, once the pass has run

    def readout_part(self, t: int) -> Optional[Part]:
        """The readout of column t as a part (``None``: the identity readout)."""
        if self.readouts is None:
            return None
        return Part([self.readouts[t]], self.maths.preserve_rng_state, f"readout of column {t}")

    def reads(self, t: int) -> bool:
        return self.readouts is None or self.readouts[t] is not None


class _LevelFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ps: _Pass, t: int, k: int, has_upper: bool, has_prev: bool,
                lower: torch.Tensor, *rest: torch.Tensor):
        eng = ps.maths
        L = eng.L
        upper = rest[0] if has_upper else None
        prev = rest[int(has_upper)] if has_prev else None
        n_in = int(has_upper) + int(has_prev)
        c, out = eng.level_step(t, k, lower, upper, prev, ps.weights, ps.mods,
                                ps.states)
        ctx.ps, ctx.t, ctx.k, ctx.has_upper, ctx.has_prev = ps, t, k, has_upper, has_prev
        ctx.params = rest[n_in:]
        ctx.set_materialize_grads(False)
        if k == 0:
            ps.column_outs = []
        ps.column_outs.append(out)
        tensors: List[torch.Tensor] = [lower] if k == 0 else []
        ctx.n_stored = ctx.fix_keys = None
        if k < L - 1:
            ctx.save_for_backward(*tensors)
            return c
        # the column's top level: its readout, and the storing decision on column t - 1
        r: Optional[torch.Tensor] = None
        part = ps.readout_part(t)
        top = eng.readout_input(c)
        if part is None:
            r = top
        elif ps.reads(t):
            with part.run(top) as state:
                r = ps.readouts[t](top)
            ps.readout_states[t] = state
        c_col = [ps.link_forward[(t, j)] for j in range(L - 1)] + [c]
        c_prev = [ps.link_forward.get((t - 1, j)) for j in range(L)] if t > 0 else None
        decision: Decision = ps.policy.step(t, c_col, ps.column_outs, c_prev, eng.alpha[t])
        ps.column_outs = []
        stored = decision.stored or []
        ctx.n_stored = len(stored)
        ctx.fix_keys = sorted(decision.fixups)
        for j in ctx.fix_keys:
            tensors += list(decision.fixups[j])
        ctx.save_for_backward(*tensors, *stored)
        return c, r

    @staticmethod
    def backward(ctx, dc: Optional[torch.Tensor], d_r: Optional[torch.Tensor] = None):
        ps: _Pass = ctx.ps
        eng, t, k = ps.maths, ctx.t, ctx.k
        L = eng.L
        refuse_create_graph(f"TemporalColumns level {k} of column {t}")
        cd = eng.dtypes()[0]
        saved = list(ctx.saved_tensors)
        s_t = saved.pop(0) if k == 0 else None
        if k == L - 1:  # hand the policy's stored states and fix-ups to the column's levels
            n_fix = 2 * len(ctx.fix_keys)
            fix, stored = saved[:n_fix], saved[n_fix:]
            for i, j in enumerate(ctx.fix_keys):
                ps.fixups[(t - 1, j)] = (fix[2 * i], fix[2 * i + 1])
            for j, x in enumerate(stored):
                ps.exact[(t - 1, j)] = x
        c_t = ps.link[(t, k)]
        p_grads: Dict[int, torch.Tensor] = {}

        def accumulate(params: Sequence[torch.Tensor], gs: Sequence[Optional[torch.Tensor]]):
            for p, g in zip(params, gs):
                if g is not None:
                    p_grads[id(p)] = _add(p_grads.get(id(p)), g)

        if k == L - 1 and d_r is not None and ps.reads(t):  # the readout of the top state
            part = ps.readout_part(t)
            if part is None:
                dc = _add(dc, d_r)
            else:
                top = eng.readout_input(c_t).detach().requires_grad_(True)
                with part.replay(ps.readout_states[t]) as aliases:
                    outs = [ps.readouts[t](top)]
                (g_top,), d_p, _ = vjp(outs, [d_r], [top], aliases, part.name)
                del top
                dc = _add(dc, g_top)
                accumulate(aliases.params, d_p)

        alpha = eng.alpha[t][k]
        lower_v = s_t if k == 0 else ps.link[(t, k - 1)]
        lower = lower_v.detach().to(cd).requires_grad_(ctx.needs_input_grad[5])
        upper = None
        if ctx.has_upper:
            upper = ps.link[(t - 1, k + 1)].detach().to(cd).requires_grad_(True)
        mods = ps.mods[t][k]
        part = eng.level_part(t, k)
        lent = [p for m in mods for p in m.transform_parameters()]
        weights = ps.back_weights
        with part.replay(ps.states[(t, k)], lent=lent) as aliases, \
                weights.lend(mods) as w_hats:
            outs = [eng.level(t, k, lower, upper, state_dtype=False)]
        c_prev: Optional[torch.Tensor] = None
        if ctx.has_prev:  # rebuild c_k^{t-1} by the inverse (or take it from storage)
            c_prev = ps.exact.pop((t - 1, k), None)
            if c_prev is None:
                c_prev = apply_fixup(inverse_step(c_t, outs[0].detach(), alpha.detach()),
                                     ps.fixups.pop((t - 1, k), None))
            ps.link[(t - 1, k)] = c_prev
        d_prev = None
        if dc is not None:
            if alpha.requires_grad:  # c_k^t = out + alpha * c_k^{t-1}  (c_k^0 = 0)
                if c_prev is None:
                    g_alpha = torch.zeros_like(alpha)
                else:
                    g_alpha = (dc * c_prev.to(dc.dtype)).sum_to_size(alpha.shape)
                accumulate([alpha], [g_alpha])
            if ctx.has_prev:
                d_prev = dc * alpha.detach().to(dc.dtype)
        lent_mods = [m for m, w in zip(mods, w_hats) if w.requires_grad]
        lent_leaves = [w for w in w_hats if w.requires_grad]
        del w_hats
        d_lower = d_upper = None
        if dc is not None:
            (d_lower, d_upper), d_p, d_w = vjp(outs, [dc.to(outs[0].dtype)], [lower, upper],
                                               aliases, part.name, extra=lent_leaves)
            accumulate(aliases.params, d_p)
            for m, gw in zip(lent_mods, d_w):
                weights.add_grad(m, gw)
            del d_w
            gw = None
        # only the lender holds W_hat and dL/dW_hat now: each pair is freed as soon as the
        # release below has taken it through the transform
        del outs, lower, upper, lent_leaves
        for p_id, gp in weights.release(mods).items():  # last use: W_hat -> W
            p_grads[p_id] = _add(p_grads.get(p_id), gp)
        del ps.link[(t, k)]  # this level is the last reader of c_k^t
        ins = ([d_upper] if ctx.has_upper else []) + ([d_prev] if ctx.has_prev else [])
        return (None, None, None, None, None, d_lower, *ins,
                *(p_grads.get(id(p)) for p in ctx.params))


class _JoinFunction(torch.autograd.Function):
    """Save the last column's states; pass the readouts through (the first node of the
    columns' backward, which hands the saved states to the last column)."""

    @staticmethod
    def forward(ctx, ps: _Pass, L: int, *args: torch.Tensor):
        c_last, rs = args[:L], args[L:]  # the readouts that exist
        ctx.save_for_backward(*c_last)
        ctx.ps, ctx.L = ps, L
        ps.report = ps.policy.finish()
        ps.link_forward = {}
        ctx.set_materialize_grads(False)
        return tuple(r.view_as(r) for r in rs)

    @staticmethod
    def backward(ctx, *d_r: Optional[torch.Tensor]):
        ps: _Pass = ctx.ps
        refuse_create_graph("TemporalColumns")
        try:
            c_last = list(ctx.saved_tensors)
        except RuntimeError as err:
            raise RuntimeError(
                "backward through TemporalColumns a second time: its saved states were freed by "
                "the first backward; pass retain_graph=True to the first backward"
            ) from err
        T = ps.maths.T
        ps.link = {(T - 1, k): c for k, c in enumerate(c_last)}
        ps.exact, ps.fixups = {}, {}
        ps.back_weights = LentWeights(ps.maths.transform_steps(ps.mods, reverse=True),
                                        leaves=True)
        return (None, None, *([None] * ctx.L), *d_r)


def run_reversible(maths: ColumnMaths, s_list: List[torch.Tensor],
                   readouts: Optional[Sequence[nn.Module]]
                   ) -> Tuple[List[Optional[torch.Tensor]], ColumnReport]:
    """The T columns in REVERSIBLE mode; returns every column's readout and the storing
    policy's report."""
    T, L = maths.T, maths.L
    policy = RebuildPolicy(
        T, L, maths.tolerance_value(), maths.thresholds, maths.store_every,
        maths.dtypes()[1], int(s_list[0].shape[0]),
    )
    ps = _Pass(maths, readouts, policy)
    rs: List[Optional[torch.Tensor]] = []
    for t in range(T):
        s_t = s_list[t if len(s_list) > 1 else 0]
        for k in range(L):
            lower = s_t if k == 0 else ps.link_forward[(t, k - 1)]
            has_upper = t > 0 and k < L - 1
            has_prev = t > 0
            ins = ([ps.link_forward[(t - 1, k + 1)]] if has_upper else []) + (
                [ps.link_forward[(t - 1, k)]] if has_prev else [])
            mods = [maths.levels[t][k]]
            if k == L - 1 and readouts is not None:
                mods.append(readouts[t])
            alpha = maths.alpha[t][k]
            params = trainable_parameters(mods) + ([alpha] if alpha.requires_grad else [])
            out = _LevelFunction.apply(ps, t, k, has_upper, has_prev, lower, *ins, *params)
            if k == L - 1:
                c, r = out
                rs.append(r)
            else:
                c = out
            ps.link_forward[(t, k)] = c
        for k in range(L):  # column t - 1 is no longer read
            ps.link_forward.pop((t - 1, k), None)
    c_last = [ps.link_forward[(T - 1, k)] for k in range(L)]
    joined = iter(_JoinFunction.apply(ps, L, *c_last, *(r for r in rs if r is not None)))
    return [next(joined) if r is not None else None for r in rs], ps.report
