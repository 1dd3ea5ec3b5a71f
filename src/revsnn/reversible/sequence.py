"""A sequence of reversible couplings with three memory modes.

Both couplings are chains of additive updates on two registers ``(a, b)``, starting from
``a = x1, b = x2`` (the halves of the stream along dim 2):

- RevCoupling block:      ``a += F(b); b += G(a)``                       (output ``(a, b)``)
- ParaRevCoupling block:  ``b += F(a); a += G(b)`` then the next block's F adds into ``a``
  again, reading ``b``: ``a += G_k(b); a += F_{k+1}(b)``. Updates that read the same register
  and write the same register form one *stage* ``M_k(u) = (G_k(u), F_{k+1}(u))``, evaluated
  once (by a merged module when one is given). After an odd number of ParaRev blocks the halves
  come out swapped: ``(y1, y2) = (b, a)``.

Each stage is ``dst <- dst + h_1(src) + h_2(src) + ...`` (added in order), so its inverse is
``dst <- dst - ... - h_2(src) - h_1(src)`` with ``src`` unchanged. In REVERSIBLE mode every
stage is an autograd Function that runs once without a graph and saves nothing; a final join
concatenates the registers and saves only the output ``y`` (``save_for_backward``). The backward
walks the stages last to first, handing the rebuilt registers from stage to stage; each stage
recomputes its branches once with grad on the rebuilt ``src``, rebuilds ``dst`` and
back-propagates, returning its parameters' gradients at once (autograd accumulates them, and
DistributedDataParallel reduces them, stage by stage)::

    d_src += (d h / d src)^T d_dst        d_theta += (d h / d theta)^T d_dst

RNG, autocast and BatchNorm statistics are replayed by :mod:`revsnn.reversible.state`.
NONE runs the same stages with plain autograd (the oracle); CHECKPOINT wraps each stage in
``torch.utils.checkpoint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.utils.checkpoint import checkpoint

from .coupling import ParaRevCoupling, RevCoupling, apply_branch
from .mode import HasMemoryMode, MemoryMode
from .state import RecomputeState, frozen_norm_stats

__all__ = ["ReversibleSequence", "ReversibleBackwardError"]


class ReversibleBackwardError(RuntimeError):
    """Raised for a second backward through a reversible sequence without ``retain_graph``."""


@dataclass
class _Stage:
    """``reg[dst] += sum_i h_i(reg[1 - dst])``; ``modules`` hold the parameters of the h_i."""

    dst: int
    run: Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]
    modules: Tuple[nn.Module, ...]

    def params(self) -> List[nn.Parameter]:
        seen, out = set(), []
        for m in self.modules:
            for p in m.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out


def _branch(m: nn.Module, name: str) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    return lambda u: (apply_branch(m, u, name),)


def _pair(g: nn.Module, f: nn.Module) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    return lambda u: (apply_branch(g, u, "G"), apply_branch(f, u, "F"))


def _merged(m: nn.Module) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    def run(u: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        out = m(u)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise ValueError(
                f"a merged module must return a pair (G_k(u), F_k+1(u)), got {type(out).__name__}"
            )
        for name, o in zip(("G", "F"), out):
            if not isinstance(o, torch.Tensor) or o.shape != u.shape:
                got = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
                raise ValueError(
                    f"merged module output {name} must have the half-stream shape "
                    f"{tuple(u.shape)}, got {got}"
                )
        return tuple(o.to(u.dtype) for o in out)

    return run


def _apply_stage(stage: _Stage, regs: List[torch.Tensor]) -> None:
    """Forward update of one stage on the register list (not in place on tensors)."""
    dst = regs[stage.dst]
    for h in stage.run(regs[1 - stage.dst]):
        dst = dst + h
    regs[stage.dst] = dst


def _invert_stage(stage: _Stage, regs: List[torch.Tensor], outs: Sequence[torch.Tensor]) -> None:
    dst = regs[stage.dst]
    for h in reversed(outs):
        dst = dst - h
    regs[stage.dst] = dst


class _Link:
    """The registers being rebuilt during one backward, handed from each stage to the one before.

    The join's backward fills ``regs`` from the saved output; every stage's backward reads the
    registers of its output from here and leaves those of its input.
    """

    __slots__ = ("regs", "consumed")

    def __init__(self) -> None:
        self.regs: List[Optional[torch.Tensor]] = [None, None]
        self.consumed = False


class _StageFunction(torch.autograd.Function):
    """One stage ``dst <- dst + sum_i h_i(src)`` with nothing saved: its backward takes the
    output registers from the link, recomputes ``h(src)`` with grad, rebuilds ``dst`` and returns
    the gradients -- the parameters' gradients included, so that autograd accumulates them (and
    DistributedDataParallel starts reducing them) stage by stage, not after the whole sequence."""

    @staticmethod
    def forward(ctx, link: _Link, seq: ReversibleSequence, stage: _Stage,
                state: RecomputeState, first: bool, r0: torch.Tensor, r1: torch.Tensor,
                *params: torch.Tensor):
        ctx.link, ctx.seq, ctx.stage, ctx.state, ctx.first = link, seq, stage, state, first
        regs = [r0, r1]
        _apply_stage(stage, regs)
        return regs[0], regs[1]  # the source register passes through unchanged

    @staticmethod
    def backward(ctx, d0: torch.Tensor, d1: torch.Tensor):
        link, seq, stage = ctx.link, ctx.seq, ctx.stage
        regs, dst = link.regs, stage.dst
        d_dst, d_src = (d0, d1) if dst == 0 else (d1, d0)
        src = regs[1 - dst].detach().requires_grad_(True)
        params = stage.params()
        with torch.enable_grad(), ctx.state.replay(), frozen_norm_stats(*stage.modules):
            outs = stage.run(src)
        seq.recompute_count += 1
        with torch.no_grad():
            if seq.inplace_inverse:
                for h in reversed(outs):
                    regs[dst].sub_(h.detach())
                h = None  # the loop's last output must not outlive the inversion
            else:
                _invert_stage(stage, regs, [o.detach() for o in outs])
        outs = [o for o in outs if o.requires_grad]
        grads: Tuple[Optional[torch.Tensor], ...] = (None,) * (1 + len(params))
        if outs:
            # Hold the recomputed graph by its edges only: the branch outputs themselves are
            # not needed by the backward (what is, the graph saved), so they are freed now.
            n_out = len(outs)
            roots = [get_gradient_edge(o) for o in outs]
            del outs
            grads = torch.autograd.grad(
                roots, [src, *params], grad_outputs=[d_dst] * n_out, allow_unused=True
            )
            del roots
        del src
        g_src = grads[0]
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
        return (None, None, None, None, None, *d_in, *grads[1:])


class _JoinFunction(torch.autograd.Function):
    """Concatenate the final registers into the output ``y`` and save only ``y``; its backward
    hands ``y``'s halves to the link (as aliases with their own version counter when the
    inverse runs in place)."""

    @staticmethod
    def forward(ctx, link: _Link, seq: ReversibleSequence, r0: torch.Tensor, r1: torch.Tensor):
        ctx.link, ctx.seq = link, seq
        regs = (r0, r1)
        y = torch.cat([regs[i] for i in seq._out_order], dim=2)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        try:
            (y,) = ctx.saved_tensors
        except RuntimeError as err:
            raise ReversibleBackwardError(
                "backward through a ReversibleSequence a second time: its saved output was "
                "freed by the first backward; pass retain_graph=True to the first backward"
            ) from err
        link, seq = ctx.link, ctx.seq
        if link.consumed:
            raise ReversibleBackwardError(
                "backward through a ReversibleSequence with inplace_inverse=True a second time: "
                "the first backward rebuilt the input inside the saved output's storage"
            )
        link.consumed = seq.inplace_inverse
        d: List[Optional[torch.Tensor]] = [None, None]
        for k, yk, dyk in zip(seq._out_order, y.chunk(2, dim=2), dy.chunk(2, dim=2)):
            # In place: an alias of y's storage with its own version counter, so that
            # rebuilding one half does not invalidate the other half saved by a branch.
            link.regs[k] = _alias(yk) if seq.inplace_inverse else yk.detach()
            d[k] = dyk
        return (None, None, d[0], d[1])


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor on ``t``'s storage (same offset, shape, strides) with its own version counter."""
    alias = torch.empty(0, dtype=t.dtype, device=t.device)
    return alias.set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


class ReversibleSequence(HasMemoryMode, nn.Module):
    """Reversible blocks over a stream ``[T, B, 2C, ...]`` split in halves along dim 2.

    Args:
        blocks: all :class:`RevCoupling` or all :class:`ParaRevCoupling`.
        memory_mode: ``"none"`` (plain autograd, the oracle), ``"checkpoint"`` or
            ``"reversible"`` (default).
        merged: ParaRev only: ``n - 1`` modules with ``merged[k](u) -> (G_k(u), F_{k+1}(u))``
            evaluating G of block k and F of block k+1 together. Blocks then hold only the
            unpaired branches (``blocks[0].f`` and ``blocks[-1].g``), the rest are ``None``.
        preserve_rng_state: capture and replay RNG for recomputation (needed for dropout).
        pair_stages: ParaRev without ``merged`` only: evaluate G_k and F_{k+1} as one stage
            (default; one evaluation of the pair, e.g. on two CUDA streams) or, with ``False``,
            as two stages one after the other (the recomputation then holds one branch's graph
            at a time, as a RevCoupling sequence does).
        inplace_inverse: rebuild the inputs inside the storage of the saved output instead of
            new tensors (saves one stream of memory in backward). The sequence's output then
            holds its *input* after backward: read it before ``backward()``; a second backward
            (``retain_graph=True``) raises :class:`ReversibleBackwardError`.
    """

    def __init__(
        self,
        blocks: Sequence[Union[RevCoupling, ParaRevCoupling]],
        memory_mode: Union[str, MemoryMode] = MemoryMode.REVERSIBLE,
        merged: Optional[Sequence[nn.Module]] = None,
        preserve_rng_state: bool = True,
        inplace_inverse: bool = False,
        pair_stages: bool = True,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ValueError("ReversibleSequence needs at least one block")
        kinds = {type(b) for b in blocks}
        if not all(issubclass(k, (RevCoupling, ParaRevCoupling)) for k in kinds):
            raise TypeError(
                "ReversibleSequence blocks must be RevCoupling or ParaRevCoupling, got "
                f"{sorted(k.__name__ for k in kinds)}"
            )
        para = all(issubclass(k, ParaRevCoupling) for k in kinds)
        if not para and any(issubclass(k, ParaRevCoupling) for k in kinds):
            raise TypeError("do not mix RevCoupling and ParaRevCoupling in one sequence")
        if merged is not None and not para:
            raise TypeError("merged modules are only for ParaRevCoupling sequences")
        if not pair_stages and (merged is not None or not para):
            raise TypeError("pair_stages=False is for ParaRevCoupling sequences without merged")
        self.pair_stages = bool(pair_stages)
        self.blocks = nn.ModuleList(blocks)
        self.merged = nn.ModuleList(merged) if merged is not None else None
        self.memory_mode = memory_mode
        self.preserve_rng_state = bool(preserve_rng_state)
        self.inplace_inverse = bool(inplace_inverse)
        self.recompute_count = 0  # stages recomputed by reversible backward (for checks)
        self._para = para
        self._stages  # noqa: B018 - validate the schedule now

    @property
    def _stages(self) -> List[_Stage]:
        """The stages, built from the current submodules on every call (so that copies of the
        sequence, e.g. by ``copy.deepcopy``, run their own modules)."""
        return self._para_stages() if self._para else self._rev_stages()

    @property
    def _out_order(self) -> Tuple[int, int]:
        return (1, 0) if self._para and len(self.blocks) % 2 == 1 else (0, 1)

    # ----------------------------------------------------------------- schedule
    def _rev_stages(self) -> List[_Stage]:
        stages = []
        for b in self.blocks:
            stages.append(_Stage(0, _branch(b.f, "F"), (b.f,)))  # a += F(b)
            stages.append(_Stage(1, _branch(b.g, "G"), (b.g,)))  # b += G(a)
        return stages

    def _para_stages(self) -> List[_Stage]:
        n = len(self.blocks)
        if self.merged is not None and len(self.merged) != n - 1:
            raise ValueError(
                f"{n} ParaRev blocks need {n - 1} merged modules, got {len(self.merged)}"
            )
        for k, b in enumerate(self.blocks):
            need_f = self.merged is None or k == 0
            need_g = self.merged is None or k == n - 1
            for name, need in (("f", need_f), ("g", need_g)):
                m = getattr(b, name)
                if need and m is None:
                    raise ValueError(f"ParaRev block {k} needs its {name.upper()} branch")
                if not need and m is not None:
                    raise ValueError(
                        f"ParaRev block {k}.{name} must be None: merged[{k - (name == 'f')}] "
                        "provides it"
                    )
        # Block k writes its F into register w_k = (k+1) % 2 reading 1 - w_k; its G the other.
        if not self.pair_stages:  # F_0, G_0, F_1, G_1, ...: G_k and F_{k+1} one after the other
            stages = []
            for k, b in enumerate(self.blocks):
                stages.append(_Stage((k + 1) % 2, _branch(b.f, "F"), (b.f,)))
                stages.append(_Stage(k % 2, _branch(b.g, "G"), (b.g,)))
            return stages
        stages = [_Stage(1, _branch(self.blocks[0].f, "F"), (self.blocks[0].f,))]
        for k in range(n - 1):
            dst = k % 2  # G_k and F_{k+1} both write here, reading the other register
            if self.merged is not None:
                m = self.merged[k]
                stages.append(_Stage(dst, _merged(m), (m,)))
            else:
                g, f = self.blocks[k].g, self.blocks[k + 1].f
                stages.append(_Stage(dst, _pair(g, f), (g, f)))
        last = self.blocks[n - 1].g
        stages.append(_Stage((n - 1) % 2, _branch(last, "G"), (last,)))
        return stages

    # ----------------------------------------------------------------- modes
    def extra_repr(self) -> str:
        return f"memory_mode={self.memory_mode.value}, stages={len(self._stages)}"

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
        regs = list(x.chunk(2, dim=2))  # [T, B, C, ...] each
        if mode is MemoryMode.REVERSIBLE and torch.is_grad_enabled():
            link = _Link()
            for i, stage in enumerate(self._stages):
                state = RecomputeState.capture(x, rng=self.preserve_rng_state)
                regs = list(_StageFunction.apply(
                    link, self, stage, state, i == 0, *regs, *stage.params()
                ))
            return _JoinFunction.apply(link, self, *regs)
        if mode is MemoryMode.CHECKPOINT and torch.is_grad_enabled():
            for stage in self._stages:
                regs = list(
                    checkpoint(
                        _CheckpointedStage(stage),
                        *regs,
                        use_reentrant=False,
                        preserve_rng_state=self.preserve_rng_state,
                    )
                )
        else:
            for stage in self._stages:
                _apply_stage(stage, regs)
        return torch.cat([regs[i] for i in self._out_order], dim=2)

    @torch.no_grad()
    def inverse(
        self, y: torch.Tensor, states: Optional[Sequence[RecomputeState]] = None
    ) -> torch.Tensor:
        """Rebuild the input from the output: run every stage backwards (no graph).

        ``states`` (from :meth:`forward_with_states`) replay RNG/autocast per stage; BatchNorm
        statistics are left untouched.
        """
        self._check(y)
        regs: List[torch.Tensor] = [None, None]  # type: ignore[list-item]
        for k, yk in zip(self._out_order, y.chunk(2, dim=2)):
            regs[k] = yk
        stages = self._stages
        for i in reversed(range(len(stages))):
            stage = stages[i]
            replay = states[i].replay() if states is not None else RecomputeState().replay()
            with replay, frozen_norm_stats(*stage.modules):
                outs = stage.run(regs[1 - stage.dst])
            _invert_stage(stage, regs, outs)
        return torch.cat(regs, dim=2)

    @torch.no_grad()
    def forward_with_states(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[RecomputeState]]:
        """Forward without a graph, also returning the per-stage recompute states."""
        self._check(x)
        regs = list(x.chunk(2, dim=2))  # [T, B, C, ...] each
        states = []
        for stage in self._stages:
            states.append(RecomputeState.capture(x, rng=self.preserve_rng_state))
            _apply_stage(stage, regs)
        return torch.cat([regs[i] for i in self._out_order], dim=2), states


class _CheckpointedStage:
    """One stage for ``torch.utils.checkpoint``; its recomputation keeps BN statistics."""

    def __init__(self, stage: _Stage) -> None:
        self.stage = stage
        self.calls = 0

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        regs = [a, b]
        if self.calls == 1:
            _apply_stage(self.stage, regs)
        else:
            with frozen_norm_stats(*self.stage.modules):
                _apply_stage(self.stage, regs)
        return regs[0], regs[1]
