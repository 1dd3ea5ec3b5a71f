"""The one recompute core: every path of revsnn that recomputes goes through it.

Reversible sequence stages, temporal-column levels and readouts, recomputed stems, downsampling
layers and tokenizer stages, and the ``"checkpoint"`` memory mode all run a *part* of a network
(a function whose parameters, buffers and state live in a list of modules, :class:`Part`) once
in the forward and again in the backward. The contract, the same for every path:

1. **RNG** -- the CPU generator and the CUDA generators of the devices involved are captured
   before the forward run and replayed in a forked RNG context (never a global reseed): dropout
   draws the same mask twice and the caller's generators continue as without recomputation.
2. **Autocast** -- the enabled flag and dtype per device type are captured and replayed.
3. **BatchNorm** -- running statistics are updated exactly once per step (the recomputation
   updates scratch copies).
4. **Parameters** -- the recomputation differentiates detached *aliases* of the trainable
   parameters, and the engine's autograd Function returns those gradients as its own. Every
   parameter's gradient therefore reaches autograd exactly once per backward: tensor hooks,
   post-accumulate hooks and DistributedDataParallel see the same values as in plain autograd,
   never ``None``, and ``torch.autograd.grad`` with respect to parameters works. A recomputed
   function that reaches a tensor requiring grad outside its part (a parameter registered
   elsewhere) would lose that gradient: it is refused with :class:`RecomputeError`.
5. **retain_graph** -- saved tensors stay valid, so a second backward or ``autograd.grad`` equals
   plain autograd. Engines rebuild in place only when the graph is not kept and nothing else
   holds the storage (:func:`exclusively_owned`).
6. **create_graph** -- recomputing Functions are first-order. ``create_graph=True`` raises
   :class:`RecomputeError` at the first node of the model's backward (:func:`guard`), before any
   of its parameters has received a gradient; parts of a module that cannot be differentiated
   twice declare it with a ``first_order_only`` attribute (a reason string). The
   ``"checkpoint"`` mode of sequences and columns uses ``torch.utils.checkpoint`` and stays exact.
7. **Module state** -- a module with a ``reset()`` method (the protocol of SpikingJelly's
   ``MemoryModule``) is reset before every run of its part, in every memory mode; a module
   without ``reset()`` whose tensors change during a run is refused by the recomputing modes
   (:class:`RecomputeError` in the forward, before anything is saved).

What is captured and restored lives in :mod:`revsnn.reversible.state`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.autograd.graph import get_gradient_edge
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from .state import (
    RecomputeState,
    StateFingerprint,
    _unique_modules,
    frozen_norm_stats,
    reset_states,
    stateful_modules,
)

__all__ = [
    "Aliases",
    "Part",
    "RecomputeError",
    "RecomputeFunction",
    "checkpoint",
    "exclusively_owned",
    "ownership_baseline",
    "first_order_reasons",
    "guard",
    "refuse_create_graph",
    "trainable_parameters",
    "vjp",
]


class RecomputeError(RuntimeError):
    """A recomputation could not give plain autograd's result; raised before anything is wrong."""


def trainable_parameters(modules: Sequence[Optional[nn.Module]]) -> List[nn.Parameter]:
    """Parameters requiring grad of every module, each once, in order."""
    seen, out = set(), []
    for m in modules:
        if m is None:
            continue
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


@dataclass
class Aliases:
    """Trainable parameters of a part and the detached leaves standing in for them."""

    params: List[nn.Parameter]
    leaves: List[torch.Tensor]


@contextlib.contextmanager
def _aliased(modules: Sequence[nn.Module], extra: Sequence[torch.Tensor] = ()) -> Iterator[Aliases]:
    """Inside the block every trainable parameter of ``modules`` is replaced (in its module's
    ``_parameters``) by a detached alias requiring grad. Parameters whose ``id`` is in ``extra``
    are left alone (their gradient is taken elsewhere, e.g. through a lent transformed weight)."""
    skip = {id(t) for t in extra}
    slots, table = [], {}
    for mod in modules:
        for name, p in mod._parameters.items():
            if p is None or not p.requires_grad or id(p) in skip:
                continue
            if id(p) not in table:
                table[id(p)] = (p, p.detach().requires_grad_(True))
            slots.append((mod, name, p))
    try:
        for mod, name, p in slots:
            mod._parameters[name] = table[id(p)][1]
        yield Aliases([p for p, _ in table.values()], [a for _, a in table.values()])
    finally:
        for mod, name, p in slots:
            mod._parameters[name] = p


class Part:
    """One recomputable part: every parameter, buffer and state its function uses lives in
    ``modules``. Engines run it under :meth:`run` in the forward and :meth:`replay` in the
    backward (see the module docstring for the contract)."""

    __slots__ = ("modules", "preserve_rng_state", "name", "on_replay", "_all", "_stateful")

    def __init__(self, modules: Sequence[Optional[nn.Module]], preserve_rng_state: bool = True,
                 name: str = "part", on_replay: Optional[Callable[[], None]] = None) -> None:
        self.modules = tuple(m for m in modules if m is not None)
        self.preserve_rng_state = bool(preserve_rng_state)
        self.name = name
        self.on_replay = on_replay  # called once per recomputation in a backward (counters)
        self._all: Optional[List[nn.Module]] = None
        self._stateful: Optional[List[nn.Module]] = None

    def all_modules(self) -> List[nn.Module]:
        """Every module of the part (submodules included), each once."""
        if self._all is None:
            self._all = _unique_modules(self.modules)
        return self._all

    def parameters(self) -> List[nn.Parameter]:
        return trainable_parameters(self.modules)

    def reset(self) -> None:
        """Reset every module following the reset protocol (before any run, in every mode)."""
        if self._stateful is None:
            self._stateful = stateful_modules(self.all_modules(), flat=True)
        reset_states(self._stateful)

    @contextlib.contextmanager
    def run(self, *tensors: torch.Tensor) -> Iterator[RecomputeState]:
        """A forward run that will be recomputed: resets stateful modules, yields the captured
        RNG/autocast state, and refuses a module that changed its state without ``reset()``."""
        self.reset()
        fingerprint = StateFingerprint(self.all_modules())
        yield RecomputeState.capture(*tensors, rng=self.preserve_rng_state)
        self._check(fingerprint)

    def _check(self, fingerprint: StateFingerprint) -> None:
        changed = fingerprint.changed()
        if changed is not None:
            module, attr = changed
            raise RecomputeError(
                f"{type(module).__name__} in {self.name} changed '{attr}' during the forward: it "
                "keeps state between calls, so recomputing it would not repeat the forward. Give "
                "it a reset() method (revsnn calls reset() before every run, as SpikingJelly's "
                "MemoryModule), keep its state explicit, or use memory_mode='none'"
            )

    @contextlib.contextmanager
    def replay(self, state: RecomputeState, lent: Sequence[torch.Tensor] = (),
               grad: bool = True) -> Iterator[Aliases]:
        """The recomputation: RNG and autocast replayed, BatchNorm statistics frozen, stateful
        modules reset; with ``grad`` (the backward), grad mode on and the trainable parameters
        (except those in ``lent``) replaced by detached aliases, which it yields."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad() if grad else torch.no_grad())
            stack.enter_context(state.replay())
            stack.enter_context(frozen_norm_stats(*self.all_modules(), flat=True))
            self.reset()
            if not grad:
                yield Aliases([], [])
                return
            if self.on_replay is not None:
                self.on_replay()
            yield stack.enter_context(_aliased(self.all_modules(), lent))

    # ------------------------------------------------------------------ checkpoint mode
    @contextlib.contextmanager
    def _checkpoint_forward(self) -> Iterator[None]:
        self.reset()
        fingerprint = StateFingerprint(self.all_modules())
        yield
        self._check(fingerprint)


class _CheckpointRecompute:
    """The part's recomputation context for ``torch.utils.checkpoint``: BatchNorm statistics
    frozen, stateful modules reset. Re-enterable (a retained graph recomputes again)."""

    def __init__(self, part: Part) -> None:
        self.part = part
        self.stack: List[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(frozen_norm_stats(*self.part.all_modules(), flat=True))
        self.stack.append(stack)
        self.part.reset()

    def __exit__(self, *exc) -> None:
        self.stack.pop().close()


def checkpoint(part: Part, fn: Callable, *args: torch.Tensor):
    """``fn(*args)`` through ``torch.utils.checkpoint`` (non-reentrant: hooks, retain_graph and
    create_graph as in plain autograd; RNG and autocast replayed by torch) with the part's
    BatchNorm freezing and state protocol around the forward and the recomputation."""
    return _torch_checkpoint(
        fn, *args, use_reentrant=False, preserve_rng_state=part.preserve_rng_state,
        context_fn=lambda: (part._checkpoint_forward(), _CheckpointRecompute(part)),
    )


# ----------------------------------------------------------------------------- gradients
def refuse_create_graph(who: str) -> None:
    """Raise when called inside a backward with ``create_graph=True`` (grad mode enabled)."""
    if torch.is_grad_enabled():
        raise RecomputeError(
            f"create_graph=True (double backward) through {who}: its backward recomputes "
            "without a differentiable graph. Use memory_mode='none' (and lean=False for the "
            "models' memory-lean primitives) for gradient penalties"
        )


def _check_leaves(outputs: Sequence[torch.Tensor], allowed: set, who: str) -> None:
    """Refuse a recomputed graph that reaches a leaf requiring grad outside ``allowed``."""
    seen: set = set()
    stack = []
    for o in outputs:
        if o.grad_fn is not None:
            stack.append(o.grad_fn)
        elif id(o) not in allowed:
            _foreign(o, who)
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:  # AccumulateGrad of a leaf
            if id(var) not in allowed:
                _foreign(var, who)
            continue
        stack.extend(f for f, _ in fn.next_functions if f is not None)


def _foreign(t: torch.Tensor, who: str) -> None:
    kind = "parameter" if isinstance(t, nn.Parameter) else "tensor requiring grad"
    raise RecomputeError(
        f"{who} uses a {kind} of shape {tuple(t.shape)} ({t.dtype}) that does not belong to its "
        "modules: its gradient would be lost by the recomputation. Register it in the module "
        "that uses it (or detach it)"
    )


def vjp(outputs: Sequence[torch.Tensor], grad_outputs: Sequence[Optional[torch.Tensor]],
        inputs: Sequence[Optional[torch.Tensor]], aliases: Aliases, who: str,
        extra: Sequence[torch.Tensor] = ()
        ) -> Tuple[List[Optional[torch.Tensor]], List[Optional[torch.Tensor]],
                   List[Optional[torch.Tensor]]]:
    """Gradients of a recomputed graph: ``(d inputs, d params, d extra)`` for ``outputs``
    weighted by ``grad_outputs``. ``inputs`` and ``extra`` are leaves of the recomputation
    (``None`` or not requiring grad: gradient ``None``); the parameter gradients are aligned
    with ``aliases.params``. The outputs are released before the backward runs (the graph holds
    what it needs): ``outputs`` is emptied, so pass a list nobody else holds."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs)
             if g is not None and isinstance(o, torch.Tensor) and o.requires_grad]
    wrt = [x for x in inputs if x is not None and x.requires_grad]
    extra_req = [x for x in extra if x.requires_grad]
    targets = wrt + list(aliases.leaves) + extra_req
    allowed = {id(t) for t in targets}
    n_in, n_p = len(inputs), len(aliases.params)
    if not pairs or not targets:
        return [None] * n_in, [None] * n_p, [None] * len(extra)
    _check_leaves([o for o, _ in pairs], allowed, who)
    roots = [get_gradient_edge(o) for o, _ in pairs]
    grads_out = [g for _, g in pairs]
    del pairs
    if isinstance(outputs, list):
        outputs.clear()
    gs = list(torch.autograd.grad(roots, targets, grads_out, allow_unused=True))
    del roots
    it = iter(gs[:len(wrt)])
    d_in = [next(it) if (x is not None and x.requires_grad) else None for x in inputs]
    d_p = gs[len(wrt):len(wrt) + n_p]
    it = iter(gs[len(wrt) + n_p:])
    d_extra = [next(it) if x.requires_grad else None for x in extra]
    return d_in, d_p, d_extra


# ----------------------------------------------------------------------------- saved input
class RecomputeFunction(torch.autograd.Function):
    """``y = fn(x)`` keeping only ``pack(x)`` for backward and recomputing ``fn`` there
    (a recomputed stem, downsampling layer or tokenizer stage). Apply through :func:`recompute`.
    """

    @staticmethod
    def forward(ctx, part: Part, fn: Callable, pack: Optional[Tuple[Callable, Callable]],
                x: torch.Tensor, *params: torch.Tensor):
        with part.run(x) as state:
            y = fn(x)
        ctx.part, ctx.fn, ctx.pack, ctx.state, ctx.dtype = part, fn, pack, state, x.dtype
        ctx.params = params
        ctx.save_for_backward(pack[0](x) if pack is not None else x)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        part: Part = ctx.part
        refuse_create_graph(part.name)
        (saved,) = ctx.saved_tensors
        x = ctx.pack[1](saved, ctx.dtype) if ctx.pack is not None else saved.detach()
        x.requires_grad_(ctx.needs_input_grad[3])
        del saved
        with part.replay(ctx.state) as aliases:
            outs = [ctx.fn(x)]
        d_in, d_p, _ = vjp(outs, [grad], [x], aliases, part.name)
        del x
        by_id = {id(p): g for p, g in zip(aliases.params, d_p)}
        return (None, None, None, d_in[0], *(by_id.get(id(p)) for p in ctx.params))


def recompute(part: Part, fn: Callable, x: torch.Tensor,
              pack: Optional[Tuple[Callable, Callable]] = None) -> torch.Tensor:
    """``fn(x)`` keeping only ``x`` (or ``pack[0](x)``, rebuilt by ``pack[1](saved, dtype)``)
    for backward and recomputing ``fn`` there; runs plainly when no gradient is needed."""
    params = part.parameters()
    if not (torch.is_grad_enabled() and (x.requires_grad or params)):
        part.reset()
        return fn(x)
    return RecomputeFunction.apply(part, fn, pack, x, *params)


# ----------------------------------------------------------------------------- guards
def first_order_reasons(module: nn.Module) -> List[str]:
    """Why ``module``'s backward cannot be differentiated again: the ``first_order_only``
    reasons of its submodules (with counts), empty when it can."""
    reasons: Counter = Counter()
    for m in module.modules():
        r = getattr(m, "first_order_only", None)
        if r:
            reasons[str(r)] += 1
    return [f"{r} (x{n})" if n > 1 else r for r, n in reasons.items()]


class _Guard(torch.autograd.Function):
    """Identity on a module's outputs whose backward -- the first of the module's nodes to run
    -- refuses ``create_graph=True`` when a part of the module is first-order only."""

    @staticmethod
    def forward(ctx, module: nn.Module, *outputs: torch.Tensor):
        ctx.module = module
        return tuple(o.view_as(o) for o in outputs)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled():
            reasons = first_order_reasons(ctx.module)
            if reasons:
                raise RecomputeError(
                    f"create_graph=True (double backward) through {type(ctx.module).__name__}: "
                    "these parts have first-order backwards only: " + "; ".join(reasons)
                    + ". Nothing was accumulated. Use memory_mode='none' and lean=False for "
                    "gradient penalties"
                )
        return (None, *grads)


def guard(module: nn.Module, *outputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Pass ``outputs`` through an identity that refuses ``create_graph=True`` up front when
    ``module`` holds first-order-only parts; returns them as a tuple."""
    if not torch.is_grad_enabled() or not any(o.requires_grad for o in outputs):
        return tuple(outputs)
    return tuple(_Guard.apply(module, *outputs))


# ----------------------------------------------------------------------------- in place
_BASELINE: Optional[int] = None


class _Probe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x * 2
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        global _BASELINE
        (y,) = ctx.saved_tensors
        _BASELINE = _use_count(y)
        return g * 2


def _use_count(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def exclusively_owned(saved: torch.Tensor) -> bool:
    """Inside the backward of a Function that saved its output and unpacked it as ``saved``
    (and holds no other reference to it): True when the graph is not kept (no
    ``retain_graph``) and no other tensor, view or saved graph holds the output's storage, so
    rebuilding the input inside it cannot be observed by anyone."""
    if torch._C._autograd._get_current_graph_task_keep_graph():
        return False
    return _BASELINE is not None and _use_count(saved) <= _BASELINE


def ownership_baseline() -> int:
    """The references a saved-and-unpacked output has when nobody else holds it, measured once
    by a tiny CPU backward on first use (nothing runs at import). Call it in a forward that
    will rely on :func:`exclusively_owned` in its backward."""
    if _BASELINE is None:
        with torch.enable_grad():
            _Probe.apply(torch.ones(1, requires_grad=True)).sum().backward()
    assert _BASELINE is not None
    return _BASELINE
