"""Surrogate spike functions: Heaviside forward, smooth derivative backward.

    S = H(x) = 1 if x >= 0 else 0            (forward, exactly 0/1)
    dS/dx ~= sigma'(x)                        (backward)

- ATan (alpha = 2):     sigma'(x) = (alpha / 2) / (1 + (pi * alpha * x / 2) ** 2)
- Sigmoid (alpha = 4):  sigma'(x) = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))
- Rectangle (width w):  sigma'(x) = 1 / w  if |x| <= w / 2 else 0   (straight-through)

Each surrogate is a small callable object; ``surrogate(x)`` returns spikes in the dtype of
``x`` and ``surrogate.derivative(x)`` the backward factor, so the primitive
``surrogate.primitive(x)`` (whose derivative is the surrogate) can be checked by finite
differences.
"""

from __future__ import annotations

import math
from typing import Union

import torch

__all__ = ["Surrogate", "ATan", "Sigmoid", "Rectangle", "get_surrogate", "heaviside"]


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """H(x) = 1 where x >= 0 else 0, in the dtype of ``x``."""
    return (x >= 0).to(x.dtype)


class _SurrogateSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.derivative(x), None


class Surrogate:
    """Base class: Heaviside forward, ``derivative`` backward."""

    name = "surrogate"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SurrogateSpike.apply(x, self)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def primitive(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """A smooth function whose derivative is :meth:`derivative` (for checks)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ATan(Surrogate):
    """sigma(x) = arctan(pi alpha x / 2) / pi + 1/2;
    sigma'(x) = (alpha / 2) / (1 + (pi alpha x / 2)^2)."""

    name = "atan"

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x).square())

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5


class Sigmoid(Surrogate):
    """sigma(x) = sigmoid(alpha x);  sigma'(x) = alpha sigmoid(alpha x) (1 - sigmoid(alpha x))."""

    name = "sigmoid"

    def __init__(self, alpha: float = 4.0) -> None:
        self.alpha = float(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.alpha * x)


class Rectangle(Surrogate):
    """Straight-through rectangle: sigma'(x) = 1/w on |x| <= w/2, else 0."""

    name = "rectangle"

    def __init__(self, width: float = 1.0) -> None:
        self.width = float(width)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() <= self.width / 2).to(x.dtype) / self.width

    def primitive(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x / self.width + 0.5, 0.0, 1.0)


_SURROGATES = {"atan": ATan, "sigmoid": Sigmoid, "rectangle": Rectangle}


def get_surrogate(spec: Union[str, Surrogate, None], **kwargs) -> Surrogate:
    """Return a surrogate from a name ("atan", "sigmoid", "rectangle") or pass one through."""
    if spec is None:
        return ATan(**kwargs)
    if isinstance(spec, Surrogate):
        return spec
    if isinstance(spec, str) and spec.lower() in _SURROGATES:
        return _SURROGATES[spec.lower()](**kwargs)
    raise ValueError(f"unknown surrogate {spec!r}; expected one of {sorted(_SURROGATES)}")
