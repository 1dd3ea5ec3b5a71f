"""Weight transforms computed once per step and lent to the modules that use them.

Some layers use a function of their parameters as their weight, e.g. weight standardisation
(:class:`revsnn.spiking.WSConv2d`: ``W_hat = ws(W, gain)``). A module takes part when it has

- ``transform_parameters()`` -> the parameters ``W_hat`` depends on,
- ``transformed_weight(*params)`` -> ``W_hat`` from those (its own parameters by default),
- ``weight_override``: ``None``, or a ``W_hat`` to use instead of computing it.

Inside :func:`lent_weights` each module uses the lent ``W_hat``, so a weight shared by several
columns, or run again by a recomputation, is transformed once. The temporal-reversible engine
lends a detached ``W_hat`` (a leaf) to the recomputations of its backward, collects
``dL/dW_hat`` over every column, and takes one vector-Jacobian product through the transform
at the end (:class:`WeightLeaves`): the chain rule, regrouped.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["transformed_modules", "transform_weights", "lent_weights", "WeightLeaves"]


def transformed_modules(module: nn.Module) -> List[nn.Module]:
    """The modules under ``module`` (each once) that follow the weight-transform protocol."""
    return [
        m for m in module.modules()
        if hasattr(m, "transformed_weight") and hasattr(m, "weight_override")
    ]


def transform_weights(modules: Sequence[nn.Module]) -> List[torch.Tensor]:
    """``W_hat`` of every module (with a graph to its parameters when grad is enabled)."""
    return [m.transformed_weight() for m in modules]


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


class WeightLeaves:
    """``W_hat`` of every module computed once with a graph to (aliases of) its parameters,
    lent as detached leaves; :meth:`parameter_grads` takes ``dL/dW_hat`` through that graph.

    The aliases keep hooks on the real parameters from firing on partial sums: the caller
    returns the gradients (the column engine, from its autograd Function's backward).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.modules = list(modules)
        self.params: List[List[torch.Tensor]] = []
        self.graphs: List[Optional[torch.Tensor]] = []
        self.leaves: List[torch.Tensor] = []
        self.aliases: List[List[torch.Tensor]] = []
        for m in self.modules:
            params = list(m.transform_parameters())
            aliases = [p.detach().requires_grad_(p.requires_grad) for p in params]
            with torch.enable_grad():
                w_hat = m.transformed_weight(*aliases)
            grad = w_hat.requires_grad
            self.params.append(params)
            self.aliases.append(aliases)
            self.graphs.append(w_hat if grad else None)
            self.leaves.append(w_hat.detach().requires_grad_(grad))

    def parameter_grads(self, grads: Dict[int, torch.Tensor]) -> Dict[int, torch.Tensor]:
        """Parameter gradients (keyed by the parameter's ``id``) from ``dL/dW_hat`` (keyed by
        the module's ``id``); frees the graphs."""
        out: Dict[int, torch.Tensor] = {}
        for i, m in enumerate(self.modules):
            g, w_hat = grads.get(id(m)), self.graphs[i]
            self.graphs[i] = None
            if g is None or w_hat is None:
                continue
            wanted = [(p, a) for p, a in zip(self.params[i], self.aliases[i]) if a.requires_grad]
            gs = torch.autograd.grad(w_hat, [a for _, a in wanted], g)
            for (p, _), gp in zip(wanted, gs):
                out[id(p)] = gp if id(p) not in out else out[id(p)] + gp
        return out
