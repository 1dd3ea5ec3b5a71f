"""Weight transforms computed once per pass and lent to the levels that use them.

Some layers use a function of their parameters as their weight, e.g. weight standardisation
(:class:`revsnn.spiking.WSConv2d`: ``W_hat = ws(W, gain)``). A module takes part when it has

- ``transform_parameters()`` -> the parameters ``W_hat`` depends on,
- ``transformed_weight(*params)`` -> ``W_hat`` from those (its own parameters by default),
- ``weight_override``: ``None``, or a ``W_hat`` to use instead of computing it.

:class:`LentWeights` walks a known sequence of steps (level calls), each using some of these
modules: a module's ``W_hat`` is computed when a step first needs it, lent to every step that
uses it (a weight shared by all columns is transformed once, not once per column) and dropped
after its last use, so at most the weights of the current level and the shared ones are alive.
In the temporal-reversible backward the lent ``W_hat`` is a leaf with a graph to (aliases of)
the parameters: ``dL/dW_hat`` is summed over every use and taken through the transform once,
at the module's last use (the chain rule, regrouped).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["transformed_modules", "lent_weights", "LentWeights"]


def transformed_modules(module: nn.Module) -> List[nn.Module]:
    """The modules under ``module`` (each once) that follow the weight-transform protocol."""
    return [
        m for m in module.modules()
        if hasattr(m, "transformed_weight") and hasattr(m, "weight_override")
    ]


@contextlib.contextmanager
def lent_weights(modules: Sequence[nn.Module], weights: Sequence[torch.Tensor]) -> Iterator[None]:
    """Every module uses its lent ``W_hat`` inside the block (restored on exit, nests)."""
    if len(modules) != len(weights):
        raise ValueError(f"{len(modules)} modules but {len(weights)} weights")
    previous = [m.weight_override for m in modules]
    try:
        for m, w in zip(modules, weights):
            m.weight_override = w
        yield
    finally:
        for m, w in zip(modules, previous):
            m.weight_override = w


class _Entry:
    """One module's lent ``W_hat`` (and, for a leaf, its graph and accumulated gradient)."""

    def __init__(self, module: nn.Module, leaf: bool) -> None:
        self.params = list(module.transform_parameters())
        self.aliases: List[torch.Tensor] = []
        self.graph: Optional[torch.Tensor] = None
        self.grad: Optional[torch.Tensor] = None
        if not leaf:  # the caller's grad mode decides (a graph in plain autograd)
            self.weight = module.transformed_weight()
            return
        self.aliases = [p.detach().requires_grad_(p.requires_grad) for p in self.params]
        with torch.enable_grad():
            w_hat = module.transformed_weight(*self.aliases)
        self.graph = w_hat if w_hat.requires_grad else None
        self.weight = w_hat.detach().requires_grad_(w_hat.requires_grad)


class LentWeights:
    """Lends ``W_hat`` to a sequence of steps, each a list of transform modules.

    Args:
        steps: the modules every step uses, in the order the steps will run (each module once
            per step); a module's ``W_hat`` is dropped after the last step that uses it.
        leaves: lend detached leaves whose gradients :meth:`add_grad` collects and
            :meth:`release` turns into parameter gradients (the reversible backward);
            otherwise ``W_hat`` is computed in the caller's grad mode (a no-grad forward, or
            plain autograd where the graph carries the gradient).
    """

    def __init__(self, steps: Sequence[Sequence[nn.Module]], leaves: bool = False) -> None:
        self.remaining = Counter(id(m) for step in steps for m in step)
        self.leaves = leaves
        self.entries: Dict[int, _Entry] = {}

    def weights(self, modules: Sequence[nn.Module]) -> List[torch.Tensor]:
        """The lent ``W_hat`` of ``modules`` (computed now if not yet)."""
        for m in modules:
            if id(m) not in self.entries:
                self.entries[id(m)] = _Entry(m, self.leaves)
        return [self.entries[id(m)].weight for m in modules]

    @contextlib.contextmanager
    def lend(self, modules: Sequence[nn.Module]) -> Iterator[List[torch.Tensor]]:
        """One step: its modules use their lent ``W_hat`` inside the block."""
        weights = self.weights(modules)
        with lent_weights(modules, weights):
            yield weights

    def add_grad(self, module: nn.Module, grad: Optional[torch.Tensor]) -> None:
        """Add ``dL/dW_hat`` of one use (leaves only)."""
        if grad is not None:
            e = self.entries[id(module)]
            # the first gradient is a buffer autograd.grad made for this use alone
            e.grad = grad if e.grad is None else e.grad.add_(grad)

    def release(self, modules: Sequence[nn.Module]) -> Dict[int, torch.Tensor]:
        """End of a step: drop the ``W_hat`` of modules used for the last time and return their
        parameter gradients (keyed by the parameter's ``id``) from the summed ``dL/dW_hat``."""
        out: Dict[int, torch.Tensor] = {}
        for m in modules:
            self.remaining[id(m)] -= 1
            if self.remaining[id(m)] > 0:
                continue
            e = self.entries.pop(id(m), None)
            if e is None or e.grad is None or e.graph is None:
                continue
            wanted = [(p, a) for p, a in zip(e.params, e.aliases) if a.requires_grad]
            gs = torch.autograd.grad(e.graph, [a for _, a in wanted], e.grad)
            e.graph = e.grad = e.weight = None  # W_hat and dL/dW_hat are dead: free them now
            for (p, _), gp in zip(wanted, gs):
                out[id(p)] = gp if id(p) not in out else out[id(p)] + gp
        return out
