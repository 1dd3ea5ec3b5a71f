"""Our neurons as NIR's continuous-time neurons, and NIR's neurons run back in discrete time.

NIR states its neurons in continuous time (``nir.IF``, ``nir.LIF``)::

    IF:   dv/dt = r I
    LIF:  tau dv/dt = (v_leak - v) + r I
    both: z = 1 when v crosses v_threshold, then v <- v_reset

Our neurons (:mod:`revsnn.spiking.neuron`) are the forward-Euler discretisation of these with a
time step ``dt`` (seconds per step; ``1e-4`` by default, the value snnTorch and SpikingJelly
assume), hard reset and V[0] = v_reset. With ``tau_s`` our time constant in steps:

=========================  ==============================================================
ours                        NIR node (arrays of the layer's per-step shape)
=========================  ==============================================================
IF   H = V + X              ``nir.IF(r = 1/dt, v_threshold, v_reset)``:  V + dt r X = V + X
LIF  H = V + (X - (V -      ``nir.LIF(tau = tau_s dt, r = 1, v_leak = v_reset, ...)``:
     V_r)) / tau_s          V + (dt/tau)(v_leak - V + r X)
LIF  H = V - (V - V_r) /    ``nir.LIF(tau = tau_s dt, r = tau_s, v_leak = v_reset, ...)``
     tau_s + X (no decay
     of the input)
PLIF (tau_s = 1/sigmoid(w)) the LIF row with the learned tau_s
=========================  ==============================================================

Fire and reset: S = 1 where H >= v_threshold, then V = v_reset where S = 1 (NIR writes the
condition as v > v_threshold; the two differ only when H equals the threshold exactly). A neuron
that resets by subtracting the threshold (``v_reset=None``) has no NIR node and is refused.

:class:`NeuronStep` runs ``nir.IF`` / ``nir.LIF`` / ``nir.LI`` / ``nir.I`` back with the same
Euler step: ``H = V + dt r I`` (IF, I) or ``H = V + (v_leak - V + r I) / (tau / dt)`` (LIF, LI).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..spiking.neuron import IF, LIF, BaseNeuron
from .errors import ExportError, refuse, require_nir

__all__ = ["DEFAULT_DT", "neuron_node", "NeuronStep"]

#: seconds per time step written into exported graphs (snnTorch's and SpikingJelly's default)
DEFAULT_DT = 1e-4


def _full(shape: Sequence[int], value: float) -> np.ndarray:
    return np.full(tuple(int(s) for s in shape), float(value), dtype=np.float64)


def neuron_node(neuron: nn.Module, shape: Sequence[int], dt: float, where: str,
                metadata: dict) -> Any:
    """The NIR node of one of our neurons over a per-step ``shape`` (module docstring)."""
    nir = require_nir()
    if not isinstance(neuron, BaseNeuron):
        raise refuse(where, f"{type(neuron).__name__} is not an IF/LIF/PLIF neuron; NIR has no "
                     "node for it")
    if neuron.v_reset is None:
        raise refuse(where, f"{type(neuron).__name__} resets by subtracting the threshold (soft "
                     "reset); NIR's IF and LIF neurons reset to v_reset")
    thr, reset = _full(shape, neuron.v_threshold), _full(shape, neuron.v_reset)
    if isinstance(neuron, LIF):  # LIF, PLIF and the lean LIF
        tau = float(torch.as_tensor(neuron.tau_value()).detach())
        if not (np.isfinite(tau) and tau > 0):
            raise refuse(where, f"time constant tau = {tau} (in steps) is not a positive number")
        r = 1.0 if neuron.decay_input else tau
        return nir.LIF(tau=_full(shape, tau * dt), r=_full(shape, r),
                       v_leak=_full(shape, neuron.v_reset), v_threshold=thr, v_reset=reset,
                       metadata=metadata)
    if isinstance(neuron, IF):
        return nir.IF(r=_full(shape, 1.0 / dt), v_threshold=thr, v_reset=reset,
                      metadata=metadata)
    raise refuse(where, f"{type(neuron).__name__} has no NIR neuron (IF, LIF and PLIF have)")


def _tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)


class NeuronStep(nn.Module):
    """One NIR neuron node stepped in discrete time with ``dt`` (module docstring).

    ``step(v, x)`` returns ``(out, v_next)``: spikes for IF/LIF, the membrane for LI/I.
    ``inclusive``: fire where ``H >= v_threshold`` (graphs written by revsnn say so in their
    metadata) instead of NIR's ``H > v_threshold``.
    """

    def __init__(self, node: Any, dt: float, dtype: torch.dtype, inclusive: bool,
                 name: str) -> None:
        super().__init__()
        kind = type(node).__name__
        self.kind, self.inclusive, self.dt = kind, bool(inclusive), float(dt)
        self.register_buffer("r", _tensor(node.r, dtype))
        if kind in ("LIF", "LI"):
            self.register_buffer("decay", _tensor(np.asarray(node.tau) / dt, dtype))
            self.register_buffer("v_leak", _tensor(node.v_leak, dtype))
        elif kind not in ("IF", "I"):
            raise ExportError(f"{name}: from_nir runs IF, LIF, LI and I neurons, not {kind}")
        self.fires = kind in ("IF", "LIF")
        if self.fires:
            self.register_buffer("v_threshold", _tensor(node.v_threshold, dtype))
            self.register_buffer("v_reset", _tensor(node.v_reset, dtype))

    def initial(self, x: torch.Tensor) -> torch.Tensor:
        return self.v_reset.expand_as(x).clone() if self.fires else torch.zeros_like(x)

    def step(self, v: Optional[torch.Tensor], x: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        if v is None:
            v = self.initial(x)
        if self.kind in ("IF", "I"):
            h = v + self.dt * self.r * x
        else:
            h = v + (self.v_leak - v + self.r * x) / self.decay
        if not self.fires:
            return h, h
        z = (h >= self.v_threshold) if self.inclusive else (h > self.v_threshold)
        s = z.to(h.dtype)
        return s, torch.where(z, self.v_reset.expand_as(h), h)
