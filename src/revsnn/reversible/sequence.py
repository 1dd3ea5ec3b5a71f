"""A sequence of reversible couplings with three memory modes.

Every coupling states its equations as additive *stages* on two registers
(:meth:`~revsnn.reversible.coupling.Coupling.stages`): ``r[dst] += h(r[1 - dst])``. The sequence
composes them -- it only tracks which physical register holds each coupling's ``x1`` and ``x2``
(a ParaRev coupling swaps them) -- and, optionally, evaluates two consecutive stages that write
the same register from the same source as one stage (``r[d] += h_a(s) + h_b(s)``). For a
ParaRevSNN sequence these pairs are ``(G_k, F_{k+1})``, which a merged module
``M_k(u) = (G_k(u), F_{k+1}(u))`` can compute at once; a RevSNN sequence has none.

Each stage is ``dst <- dst + h_1(src) + h_2(src) + ...`` (added in order), so its inverse is
``dst <- dst - ... - h_2(src) - h_1(src)`` with ``src`` unchanged. In REVERSIBLE mode every
stage is an autograd Function that runs once without a graph and saves nothing; a final join
concatenates the registers and saves only the output ``y`` (``save_for_backward``). The backward
walks the stages last to first, handing the rebuilt registers from stage to stage; each stage
recomputes its branches once with grad on the rebuilt ``src`` through the recompute core
(:mod:`revsnn.reversible.recompute`: RNG, autocast, BatchNorm, parameter aliases, module state),
rebuilds ``dst`` and back-propagates, returning its parameters' gradients at once (autograd
accumulates them -- hooks fire once -- and DistributedDataParallel reduces them stage by
stage)::

    d_src += (d h / d src)^T d_dst        d_theta += (d h / d theta)^T d_dst

The inputs are rebuilt inside the storage of the saved output when nothing else can observe it
(no ``retain_graph``, no other reference to the output); otherwise into new tensors.
NONE runs the same stages with plain autograd (the oracle); CHECKPOINT wraps each stage in
``torch.utils.checkpoint`` through the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from .coupling import Coupling, Stage, merge
from .mode import HasMemoryMode, MemoryMode
from .recompute import (
    Part,
    RecomputeError,
    checkpoint,
    exclusively_owned,
    ownership_baseline,
    refuse_create_graph,
    vjp,
)
from .state import RecomputeState

__all__ = ["ReversibleSequence", "ReversibleBackwardError"]


class ReversibleBackwardError(RuntimeError):
    """Raised for a second backward through a reversible sequence without ``retain_graph``."""


def _apply_stage(stage: Stage, regs: List[torch.Tensor]) -> None:
    """Forward update of one stage on the register list (not in place on tensors)."""
    dst = regs[stage.dst]
    for h in stage.run(regs[1 - stage.dst]):
        dst = dst + h
    regs[stage.dst] = dst


def _invert_stage(stage: Stage, regs: List[torch.Tensor], outs: Sequence[torch.Tensor]) -> None:
    dst = regs[stage.dst]
    for h in reversed(outs):
        dst = dst - h
    regs[stage.dst] = dst


class _Link:
    """The registers being rebuilt during one backward, handed from each stage to the one before.

    The join's backward fills ``regs`` from the saved output; every stage's backward reads the
    registers of its output from here and leaves those of its input. ``inplace``: the registers
    alias the saved output's storage and are rebuilt in it.
    """

    __slots__ = ("regs", "inplace")

    def __init__(self) -> None:
        self.regs: List[Optional[torch.Tensor]] = [None, None]
        self.inplace = False


class _StageFunction(torch.autograd.Function):
    """One stage ``dst <- dst + sum_i h_i(src)`` with nothing saved: its backward takes the
    output registers from the link, recomputes ``h(src)`` with grad, rebuilds ``dst`` and returns
    the gradients -- the parameters' gradients included, so that autograd accumulates them (and
    DistributedDataParallel starts reducing them) stage by stage, not after the whole sequence."""

    @staticmethod
    def forward(ctx, link: _Link, stage: Stage, part: Part,
                first: bool, r0: torch.Tensor, r1: torch.Tensor, *params: torch.Tensor):
        regs = [r0, r1]
        with part.run(r0) as state:
            _apply_stage(stage, regs)
        ctx.link, ctx.stage, ctx.part, ctx.state = link, stage, part, state
        ctx.first, ctx.params = first, params
        return regs[0], regs[1]  # the source register passes through unchanged

    @staticmethod
    def backward(ctx, d0: torch.Tensor, d1: torch.Tensor):
        part: Part = ctx.part
        refuse_create_graph(part.name)
        link, stage = ctx.link, ctx.stage
        regs, dst = link.regs, stage.dst
        d_dst, d_src = (d0, d1) if dst == 0 else (d1, d0)
        src = regs[1 - dst].detach().requires_grad_(True)
        with part.replay(ctx.state) as aliases:
            outs = list(stage.run(src))
        with torch.no_grad():
            if link.inplace:
                for h in reversed(outs):
                    regs[dst].sub_(h.detach())
                h = None  # the loop's last output must not outlive the inversion
            else:
                _invert_stage(stage, regs, [o.detach() for o in outs])
        n = len(outs)
        (g_src,), d_p, _ = vjp(outs, [d_dst] * n, [src], aliases, part.name)
        del src
        if g_src is None:
            d_src_in = d_src
        elif _shares_storage(g_src, d_dst) or _shares_storage(g_src, d_src):
            d_src_in = g_src + d_src
        else:
            d_src_in = g_src.add_(d_src)  # a buffer autograd.grad made for us alone
        del g_src, d_src
        d_in = (d_dst, d_src_in) if dst == 0 else (d_src_in, d_dst)
        if ctx.first:
            # The rebuilt input is not needed any more; the link (held by the graph's nodes
            # until the whole backward ends) must not keep it -- or y's storage -- alive.
            link.regs = [None, None]
        by_id = {id(p): g for p, g in zip(aliases.params, d_p)}
        return (None, None, None, None, *d_in, *(by_id.get(id(p)) for p in ctx.params))


class _JoinFunction(torch.autograd.Function):
    """Concatenate the final registers into the output ``y`` and save only ``y``; its backward
    hands ``y``'s halves to the link (as aliases with their own version counter when they are
    rebuilt in place)."""

    @staticmethod
    def forward(ctx, link: _Link, seq: ReversibleSequence, order: Tuple[int, int],
                r0: torch.Tensor, r1: torch.Tensor):
        ctx.link, ctx.seq, ctx.order = link, seq, order
        ownership_baseline()  # measured once (at construction unless built otherwise)
        regs = (r0, r1)
        y = torch.cat([regs[i] for i in order], dim=2)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        refuse_create_graph(type(ctx.seq).__name__)
        try:
            (y,) = ctx.saved_tensors
        except RuntimeError as err:
            raise ReversibleBackwardError(
                "backward through a ReversibleSequence a second time: its saved output was "
                "freed by the first backward; pass retain_graph=True to the first backward"
            ) from err
        link = ctx.link
        link.inplace = ctx.seq.inplace_inverse and exclusively_owned(y)
        d: List[Optional[torch.Tensor]] = [None, None]
        for k, yk, dyk in zip(ctx.order, y.chunk(2, dim=2), dy.chunk(2, dim=2)):
            # In place: an alias of y's storage with its own version counter, so that
            # rebuilding one half does not invalidate the other half saved by a branch.
            link.regs[k] = _alias(yk) if link.inplace else yk.detach()
            d[k] = dyk
        return (None, None, None, d[0], d[1])


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor on ``t``'s storage (same offset, shape, strides) with its own version counter."""
    alias = torch.empty(0, dtype=t.dtype, device=t.device)
    return alias.set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


class ReversibleSequence(HasMemoryMode, nn.Module):
    """Reversible blocks over a stream ``[T, B, 2C, ...]`` split in halves along dim 2.

    Args:
        blocks: couplings (:class:`RevCoupling`, :class:`ParaRevCoupling` or any
            :class:`~revsnn.reversible.coupling.Coupling`), applied in order.
        memory_mode: ``"none"`` (plain autograd, the oracle), ``"checkpoint"`` or
            ``"reversible"`` (default).
        merged: modules fusing the sequence's pairs of consecutive stages that write the same
            register from the same source, in order (ParaRev: ``merged[k](u) -> (G_k(u),
            F_{k+1}(u))``, ``n - 1`` of them for n blocks). The couplings then hold ``None``
            for the fused branches (ParaRev: every branch but ``blocks[0].f`` and
            ``blocks[-1].g``).
        preserve_rng_state: capture and replay RNG for recomputation (needed for dropout).
        pair_stages: without ``merged``: evaluate such pairs as one stage (default; one
            evaluation of the pair, e.g. on two CUDA streams) or, with ``False``, as two
            stages one after the other (the recomputation then holds one branch's graph at a
            time, as a RevCoupling sequence does).
        inplace_inverse: let the reversible backward rebuild the inputs inside the storage of
            the saved output when nothing else can observe it -- the graph is not retained and
            no other tensor, view or graph holds the output (saves one stream of memory in
            backward); otherwise, or with ``False``, the inputs are rebuilt into new tensors.
    """

    def __init__(
        self,
        blocks: Sequence[Coupling],
        memory_mode: Union[str, MemoryMode] = MemoryMode.REVERSIBLE,
        merged: Optional[Sequence[nn.Module]] = None,
        preserve_rng_state: bool = True,
        inplace_inverse: bool = True,
        pair_stages: bool = True,
    ) -> None:
        super().__init__()
        ownership_baseline()  # measured here, never inside a measured step
        blocks = list(blocks)
        if not blocks:
            raise ValueError("ReversibleSequence needs at least one block")
        bad = sorted({type(b).__name__ for b in blocks if not isinstance(b, Coupling)})
        if bad:
            raise TypeError(
                "ReversibleSequence blocks must be couplings (RevCoupling, ParaRevCoupling), "
                f"got {bad}"
            )
        if not pair_stages and merged is not None:
            raise TypeError("pair_stages=False cannot be combined with merged modules")
        self.pair_stages = bool(pair_stages)
        self.blocks = nn.ModuleList(blocks)
        self.merged = nn.ModuleList(merged) if merged is not None else None
        self.memory_mode = memory_mode
        self.preserve_rng_state = bool(preserve_rng_state)
        self.inplace_inverse = bool(inplace_inverse)
        self.recompute_count = 0  # stages recomputed by reversible backward (for checks)
        self._schedule()  # validate now

    @property
    def first_order_only(self) -> Optional[str]:
        if self.memory_mode is MemoryMode.REVERSIBLE:
            return "ReversibleSequence in reversible mode"
        return None

    # ----------------------------------------------------------------- schedule
    def _schedule(self) -> Tuple[List[Stage], Tuple[int, int]]:
        """The stages on physical registers, and which register holds (y1, y2) at the end.

        Built from the current submodules on every call (so that copies of the sequence, e.g.
        by ``copy.deepcopy``, and edited sequences run their own modules)."""
        perm = [0, 1]  # physical register holding the current coupling's x1, x2
        flat: List[Stage] = []
        for b in self.blocks:
            stages, swapped = b.stages()
            flat += [s.on(perm[s.dst]) for s in stages]
            if swapped:
                perm = [perm[1], perm[0]]
        if self.merged is not None or self.pair_stages:
            flat = self._pair(flat)
        for s in flat:
            s.check()
        return flat, (perm[0], perm[1])

    def schedule(self) -> Tuple[List[Stage], Tuple[int, int]]:
        """The stages this sequence runs on the registers ``(r0, r1) = (x1, x2)`` of its input
        halves, and which register holds ``(y1, y2)`` at the end (what an exporter writes)."""
        return self._schedule()

    def _pair(self, flat: List[Stage]) -> List[Stage]:
        """Each pair of consecutive stages writing the same register (left to right) as one
        stage, evaluated by the next merged module when there are any."""
        groups: List[List[Stage]] = []
        for s in flat:
            if groups and len(groups[-1]) == 1 and groups[-1][0].dst == s.dst:
                groups[-1].append(s)
            else:
                groups.append([s])
        merged = list(self.merged) if self.merged is not None else None
        n_pairs = sum(len(g) == 2 for g in groups)
        if merged is not None and n_pairs != len(merged):
            raise ValueError(
                f"merged modules fuse consecutive stages writing the same register: these "
                f"{len(self.blocks)} couplings have {n_pairs} such pairs, got {len(merged)} "
                "merged modules"
            )
        out, k = [], 0
        for g in groups:
            if len(g) == 1:
                out.append(g[0])
                continue
            fused = None
            if merged is not None:
                fused = merged[k]
                for name, m in g[0].branches + g[1].branches:
                    if m is not None:
                        raise ValueError(
                            f"branch {name} of the pair fused by merged[{k}] must be None in its "
                            "coupling: the merged module provides it"
                        )
            out.append(merge(g[0], g[1], fused))
            k += 1
        return out

    # ----------------------------------------------------------------- modes
    def extra_repr(self) -> str:
        return f"memory_mode={self.memory_mode.value}, stages={len(self._schedule()[0])}"

    def _part(self, k: int, stage: Stage) -> Part:
        return Part(stage.modules(), self.preserve_rng_state, f"stage {k} ({stage.name})",
                    on_replay=self._count)

    def _count(self) -> None:
        self.recompute_count += 1

    # ----------------------------------------------------------------- forward
    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ReversibleSequence expects a tensor, got {type(x).__name__}")
        if x.dim() < 3:
            raise ValueError(
                "ReversibleSequence expects a stream [T, B, 2C, ...] split along dim 2, "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[2] % 2:
            raise ValueError(
                "ReversibleSequence splits dim 2 into two halves: expected an even channel "
                f"count [T, B, 2C, ...], got {x.shape[2]} in shape {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        mode = self.memory_mode
        stages, order = self._schedule()
        regs = list(x.chunk(2, dim=2))  # [T, B, C, ...] each
        grad = torch.is_grad_enabled()
        if mode is MemoryMode.REVERSIBLE and grad:
            if x.is_floating_point() and torch.finfo(x.dtype).bits < 32:
                raise RecomputeError(
                    f"a reversible stream must be float32 or float64, got {x.dtype}: rebuilding "
                    "it by the inverse in a 16-bit format loses the low bits of every update "
                    "(under autocast, cast the stream, e.g. x.float(), and let F and G run in "
                    "low precision)"
                )
            link = _Link()
            for i, stage in enumerate(stages):
                part = self._part(i, stage)
                regs = list(_StageFunction.apply(
                    link, stage, part, i == 0, *regs, *part.parameters()
                ))
            return _JoinFunction.apply(link, self, order, *regs)
        for i, stage in enumerate(stages):
            part = self._part(i, stage)
            if mode is MemoryMode.CHECKPOINT and grad:
                regs = list(checkpoint(part, _StageFn(stage), *regs))
            else:
                part.reset()
                _apply_stage(stage, regs)
        return torch.cat([regs[i] for i in order], dim=2)

    @torch.no_grad()
    def inverse(
        self, y: torch.Tensor, states: Optional[Sequence[RecomputeState]] = None
    ) -> torch.Tensor:
        """Rebuild the input from the output: run every stage backwards (no graph).

        ``states`` (from :meth:`forward_with_states`) replay RNG/autocast per stage; BatchNorm
        statistics are left untouched.
        """
        self._check(y)
        stages, order = self._schedule()
        regs: List[torch.Tensor] = [None, None]  # type: ignore[list-item]
        for k, yk in zip(order, y.chunk(2, dim=2)):
            regs[k] = yk
        for i in reversed(range(len(stages))):
            stage = stages[i]
            state = states[i] if states is not None else RecomputeState()
            with self._part(i, stage).replay(state, grad=False):
                outs = stage.run(regs[1 - stage.dst])
            _invert_stage(stage, regs, outs)
        return torch.cat(regs, dim=2)

    @torch.no_grad()
    def forward_with_states(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[RecomputeState]]:
        """Forward without a graph, also returning the per-stage recompute states."""
        self._check(x)
        stages, order = self._schedule()
        regs = list(x.chunk(2, dim=2))  # [T, B, C, ...] each
        states = []
        for i, stage in enumerate(stages):
            with self._part(i, stage).run(x) as state:
                _apply_stage(stage, regs)
            states.append(state)
        return torch.cat([regs[i] for i in order], dim=2), states


class _StageFn:
    """One stage as a function of the two registers (for checkpointing)."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        regs = [a, b]
        _apply_stage(self.stage, regs)
        return regs[0], regs[1]

