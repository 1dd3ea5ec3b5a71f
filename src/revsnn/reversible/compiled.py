"""Where ``torch.compile`` stops: the recomputing engines run as written, outside any graph.

A recomputing engine (reversible stages, temporal-column levels, ``recompute``, the checkpoint
mode) is an autograd Function whose forward captures RNG and autocast state, checks module
state fingerprints and keeps Python objects (the part, the link between stages) for its
backward, whose backward calls ``torch.autograd.grad`` on a recomputed graph. None of that is
a tensor program: TorchDynamo cannot trace it into a graph, and a partial trace would capture
the contract's checks (RNG capture, fingerprints, ``torch.equal`` on packed spikes) as graph
breaks in the middle of the compute. :func:`outside_compile` marks such an entry point: called
from compiled code it is one clean graph break, and it runs eagerly with TorchDynamo off for
everything it calls -- except modules compiled in place (``module.compile()``, as
:func:`revsnn.models.compile.compile_model` does for every branch, level, readout and neuron),
which run their compiled graphs both in the engine's forward run and in its recomputation
during the backward.

When ``torch._dynamo`` has not been imported nothing can be compiling, and the function is
called directly (importing TorchDynamo costs seconds).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Dict, TypeVar

__all__ = ["outside_compile", "prepare"]

F = TypeVar("F", bound=Callable[..., Any])

_DISABLED: Dict[Callable, Callable] = {}
_PREPARED = False


def prepare() -> None:
    """Tell TorchDynamo not to trace the wrappers themselves (imports it): called by
    :func:`revsnn.models.compile.compile_model`, and by the first wrapper call after TorchDynamo
    was imported; without it, the first compiled call of an engine breaks its graph twice."""
    global _PREPARED
    if _PREPARED:
        return
    from torch._dynamo.eval_frame import skip_code

    for code in (_wrapper_code, _disabled.__code__, prepare.__code__):
        skip_code(code)
    _PREPARED = True


def _disabled(fn: Callable) -> Callable:
    d = _DISABLED.get(fn)
    if d is None:
        import torch._dynamo

        d = _DISABLED[fn] = torch._dynamo.disable(fn, recursive=True, wrapping=False)
    return d


def outside_compile(fn: F) -> F:
    """``fn`` run eagerly, never traced by TorchDynamo (a graph break where compiled code
    calls it); modules compiled in place still run compiled inside it."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not _PREPARED:
            prepare()
        return _disabled(fn)(*args, **kwargs)

    inner._torchdynamo_disable = True  # type: ignore[attr-defined]
    inner._torchdynamo_disable_msg = (  # type: ignore[attr-defined]
        "a revsnn recomputing engine runs eagerly (see revsnn.reversible.compiled)")
    return inner  # type: ignore[return-value]


_wrapper_code = outside_compile(lambda: None).__code__
