"""Spiking neurons over time-first sequences ``[T, B, ...]`` with no hidden state.

Every multi-step call starts from the reset state (V[0] = v_reset, or 0 for soft reset) and
returns the spikes of all T steps, so calling a neuron twice on the same input gives the same
output and recomputation in a reversible backward needs no ``reset_net``. Callers that need the
state use the functional single-step forms, which take and return it explicitly.

Charge (H is the membrane after input, before firing):

- IF:   H[t] = V[t-1] + X[t]
- LIF:  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau        (decay_input=True)
        H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]          (decay_input=False)
- PLIF: LIF with tau = 1 / sigmoid(w), w learnable (init so that tau = tau_init)

Fire and reset:  S[t] = Heaviside(H[t] - v_th) (surrogate gradient);
hard reset V[t] = H[t] (1 - S[t]) + V_reset S[t];
soft reset (v_reset=None) V[t] = H[t] - v_th S[t].
With ``detach_reset`` the S used by the reset carries no gradient.

StatelessSpike (T-RevSNN's "temporal-off" neuron): S(z) = 1 if z >= 0.5 else 0
(= floor(clamp(z, 0, 1) + 0.5)), straight-through gradient 1 on 0 <= z <= 1, the same rule in
training and evaluation.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn

from .surrogate import Surrogate, get_surrogate

__all__ = [
    "if_step",
    "lif_step",
    "fire_and_reset",
    "multi_step",
    "BaseNeuron",
    "IF",
    "LIF",
    "PLIF",
    "StatelessSpike",
    "stateless_spike",
]


def fire_and_reset(
    h: torch.Tensor,
    v_threshold: float,
    v_reset: Optional[float],
    surrogate: Surrogate,
    detach_reset: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """S = H(h - v_th); return (S, V after reset)."""
    s = surrogate(h - v_threshold)
    r = s.detach() if detach_reset else s
    if v_reset is None:
        v = h - r * v_threshold
    else:
        v = h * (1.0 - r) + v_reset * r
    return s, v


def if_step(
    v: torch.Tensor,
    x: torch.Tensor,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: Union[str, Surrogate, None] = "atan",
    detach_reset: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One IF step: H = V + X, then fire and reset. Returns (S, V_next)."""
    return fire_and_reset(v + x, v_threshold, v_reset, get_surrogate(surrogate), detach_reset)


def lif_step(
    v: torch.Tensor,
    x: torch.Tensor,
    tau: Union[float, torch.Tensor] = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: Union[str, Surrogate, None] = "sigmoid",
    detach_reset: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One LIF step (see module docstring). ``tau`` may be a tensor (PLIF). Returns (S, V_next)."""
    rest = 0.0 if v_reset is None else v_reset
    if decay_input:
        h = v + (x - (v - rest)) / tau
    else:
        h = v - (v - rest) / tau + x
    return fire_and_reset(h, v_threshold, v_reset, get_surrogate(surrogate), detach_reset)


def _check_sequence(x: torch.Tensor, who: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{who} expects a tensor [T, B, ...], got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(
            f"{who} expects a time-first tensor [T, B, ...], got shape {tuple(x.shape)}"
        )


class BaseNeuron(nn.Module):
    """Multi-step neuron over ``[T, B, ...]``; subclasses define :meth:`charge`."""

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: Union[str, Surrogate, None] = "atan",
        detach_reset: bool = True,
    ) -> None:
        super().__init__()
        self.v_threshold = float(v_threshold)
        self.v_reset = None if v_reset is None else float(v_reset)
        self.surrogate = get_surrogate(surrogate)
        self.detach_reset = bool(detach_reset)

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def initial_state(self, x_t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x_t, 0.0 if self.v_reset is None else self.v_reset)

    def step(self, v: torch.Tensor, x_t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One explicit-state step: returns (S[t], V[t])."""
        h = self.charge(v, x_t)
        return fire_and_reset(h, self.v_threshold, self.v_reset, self.surrogate, self.detach_reset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return multi_step(self, x)[0]  # [T, B, ...]

    def extra_repr(self) -> str:
        return (
            f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"surrogate={self.surrogate!r}, detach_reset={self.detach_reset}"
        )


class IF(BaseNeuron):
    """Integrate-and-fire: H[t] = V[t-1] + X[t]. Default surrogate ATan(alpha=2)."""

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return v + x


class LIF(BaseNeuron):
    """Leaky integrate-and-fire, H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau.

    Default surrogate Sigmoid(alpha=4)."""

    def __init__(
        self,
        tau: float = 2.0,
        decay_input: bool = True,
        v_threshold: float = 1.0,
        v_reset: Optional[float] = 0.0,
        surrogate: Union[str, Surrogate, None] = "sigmoid",
        detach_reset: bool = True,
    ) -> None:
        super().__init__(v_threshold, v_reset, surrogate, detach_reset)
        if tau <= 1.0 and decay_input is False:
            raise ValueError(f"tau must be > 1 without decay_input, got {tau}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = float(tau)
        self.decay_input = bool(decay_input)

    def tau_value(self) -> Union[float, torch.Tensor]:
        return self.tau

    def charge(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tau = self.tau_value()
        rest = 0.0 if self.v_reset is None else self.v_reset
        if self.decay_input:
            return v + (x - (v - rest)) / tau
        return v - (v - rest) / tau + x

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class PLIF(LIF):
    """Parametric LIF: tau = 1 / sigmoid(w) with learnable w, initialised at tau_init."""

    def __init__(self, tau_init: float = 2.0, **kwargs) -> None:
        if tau_init <= 1.0:
            raise ValueError(f"PLIF needs tau_init > 1, got {tau_init}")
        super().__init__(tau=tau_init, **kwargs)
        self.w = nn.Parameter(torch.tensor(-math.log(tau_init - 1.0)))

    def tau_value(self) -> torch.Tensor:
        return 1.0 / torch.sigmoid(self.w)

    def extra_repr(self) -> str:
        return f"tau_init={self.tau}, " + super().extra_repr()


class _StatelessSpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        # Keep only a 1-byte mask for backward, not the float input.
        ctx.save_for_backward((z >= 0) & (z <= 1))
        return (z >= 0.5).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad_out * inside.to(grad_out.dtype)


def stateless_spike(z: torch.Tensor) -> torch.Tensor:
    """S(z) = 1 if z >= 0.5 else 0 (= floor(clamp(z, 0, 1) + 0.5)); dS/dz = 1 on [0, 1]."""
    if not (z.requires_grad and torch.is_grad_enabled()):  # no graph: skip the mask
        return (z >= 0.5).to(z.dtype)
    return _StatelessSpikeFn.apply(z)


class StatelessSpike(nn.Module):
    """T-RevSNN's temporal-off neuron, elementwise on any shape (no time loop, no state)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return stateless_spike(z)


def multi_step(neuron: BaseNeuron, x: torch.Tensor, v0: Optional[torch.Tensor] = None):
    """Run ``neuron`` over ``x`` [T, B, ...] from explicit state ``v0``; return (spikes, V_T)."""
    _check_sequence(x, type(neuron).__name__)
    v = neuron.initial_state(x[0]) if v0 is None else v0
    out = []
    for t in range(x.shape[0]):
        s, v = neuron.step(v, x[t])
        out.append(s)
    return torch.stack(out), v
