"""Memory-lean spiking primitives: the same values and gradients, much less saved for backward.

Plain autograd over a multi-step neuron keeps, for every time step, the float membrane
``H[t] - v_th`` (for the surrogate) and the float reset factor ``1 - S[t]``; a convolution or a
max-pool fed with spikes keeps its float input (and the pool its int64 argmax indices). Spikes
are exactly 0 or 1, and the membranes are a cheap elementwise recurrence of the input, so
almost all of that can be rebuilt in backward:

- :class:`LeanIF` / :class:`LeanLIF`: multi-step neurons whose autograd node saves **only the
  input** ``X[T, B, ...]`` (often a tensor that is alive anyway, e.g. a reversible half-stream)
  and re-runs the recurrence ``H[t] = charge(V[t-1], X[t])`` in backward. The backward is the
  chain rule of the plain neuron written out (detached or attached reset, hard or soft)::

      dL/dH[t] = dL/dS[t] * sigma'(H[t] - v_th) + dL/dV[t] * dV[t]/dH[t]
      dL/dX[t] = dL/dH[t] * dH/dX            dL/dV[t-1] = dL/dH[t] * dH/dV

  with the same floating-point operations in the same order as autograd's, so gradients equal
  those of :class:`~revsnn.spiking.IF` / :class:`~revsnn.spiking.LIF` (bit for bit in the
  detached-reset case the models use; to rounding otherwise).
- :class:`SpikeConv2d`: an ``nn.Conv2d`` whose binary input is saved as a ``bool`` tensor (1 byte
  per spike instead of 4 or 8) and turned back into floats only inside backward; the gradient is
  ``aten.convolution_backward`` on the identical input, i.e. exactly autograd's.
- :class:`SpikeMaxPool2d`: max-pool over spikes saving the input as ``bool`` (no float input, no
  int64 indices); backward re-runs the pool with indices on the rebuilt input (ties resolve the
  same way, so the gradient is autograd's).

Spikes are checked to be binary where they are packed; a non-binary input raises ``ValueError``
(it would make the saved copy inexact).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .neuron import IF, LIF, BaseNeuron, fire_and_reset

__all__ = [
    "LeanIF",
    "LeanLIF",
    "SpikeConv2d",
    "SpikeMaxPool2d",
    "lean_neuron",
    "pack_spikes",
    "unpack_spikes",
]


def pack_spikes(s: torch.Tensor, who: str) -> torch.Tensor:
    """Return ``s`` as a bool tensor, checking that every entry is exactly 0 or 1."""
    b = s.to(torch.bool)
    if not torch.equal(b.to(s.dtype), s):
        raise ValueError(
            f"{who} expects binary spikes (every entry exactly 0 or 1) of shape "
            f"{tuple(s.shape)}; got other values"
        )
    return b


def unpack_spikes(b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool spikes back to 0/1 floats of ``dtype`` (bit-identical to the packed input)."""
    return b.to(dtype)


# ----------------------------------------------------------------------------- neurons
def _charge_grads(neuron: BaseNeuron, gh: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(dL/dX[t], dL/dV[t-1]) from dL/dH[t], as autograd evaluates the neuron's ``charge``."""
    if isinstance(neuron, IF):
        return gh, gh  # H = V + X
    tau = neuron.tau
    if neuron.decay_input:  # H = V + (X - (V - rest)) / tau
        gd = gh / tau
        return gd, gh + (-gd)
    # H = V - (V - rest) / tau + X
    return gh, gh + ((-gh) / tau)


class _LeanNeuronFn(torch.autograd.Function):
    """Multi-step neuron saving only its input; membranes rebuilt in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, neuron: BaseNeuron) -> torch.Tensor:
        ctx.neuron = neuron  # hyperparameters only (no parameters, no tensors)
        ctx.save_for_backward(x)
        v = neuron.initial_state(x[0])
        out = torch.empty_like(x)
        for t in range(x.shape[0]):
            s, v = neuron.step(v, x[t])
            out[t] = s
        return out  # [T, B, ...] spikes

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        (x,) = ctx.saved_tensors
        n: BaseNeuron = ctx.neuron
        # Rebuild the membranes H[t] (before firing) exactly as the forward did.
        hs: List[torch.Tensor] = []
        v = n.initial_state(x[0])
        for t in range(x.shape[0]):
            h = n.charge(v, x[t])
            hs.append(h)
            _, v = fire_and_reset(h, n.v_threshold, n.v_reset, n.surrogate, n.detach_reset)
        grad_x = torch.empty_like(x)
        gv: Optional[torch.Tensor] = None  # dL/dV[t]
        for t in reversed(range(x.shape[0])):
            h = hs.pop()
            z = h - n.v_threshold
            sg = n.surrogate.derivative(z)
            gs = grad_s[t]
            if gv is not None and not n.detach_reset:
                # Reset path through S: hard V = H (1 - S) + v_r S; soft V = H - v_th S.
                if n.v_reset is None:
                    gs = gs + (-(gv * n.v_threshold))
                else:
                    gs = gs + (-(gv * h)) + gv * n.v_reset
            gh = gs * sg
            if gv is not None:
                if n.v_reset is None:
                    gh = gh + gv
                else:
                    s = (z >= 0).to(h.dtype)
                    gh = gh + gv * (1.0 - s)
            grad_x[t], gv = _charge_grads(n, gh)
        return grad_x, None


def _check_lean(neuron: BaseNeuron, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{type(neuron).__name__} expects a tensor [T, B, ...], got {type(x).__name__}"
        )
    if x.dim() < 2:
        raise ValueError(
            f"{type(neuron).__name__} expects a time-first tensor [T, B, ...], got shape "
            f"{tuple(x.shape)}"
        )


class LeanIF(IF):
    """IF neuron (``H[t] = V[t-1] + X[t]``) whose backward saves only ``X``; same outputs and
    gradients as :class:`~revsnn.spiking.IF` (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_lean(self, x)
        return _LeanNeuronFn.apply(x, self)


class LeanLIF(LIF):
    """LIF neuron with a constant ``tau`` whose backward saves only ``X``; same outputs and
    gradients as :class:`~revsnn.spiking.LIF`. (PLIF's learnable tau is not supported.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_lean(self, x)
        return _LeanNeuronFn.apply(x, self)


def lean_neuron(neuron: BaseNeuron) -> BaseNeuron:
    """A lean copy of a plain IF or LIF neuron (same hyperparameters)."""
    if type(neuron) is IF:
        out: BaseNeuron = LeanIF.__new__(LeanIF)
    elif type(neuron) is LIF:
        out = LeanLIF.__new__(LeanLIF)
    else:
        raise TypeError(f"lean_neuron supports IF and LIF, got {type(neuron).__name__}")
    out.__dict__.update(neuron.__dict__)
    return out


# ----------------------------------------------------------------------------- conv / pool
class _SpikeConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, weight, bias, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups, None if bias is None else bias.shape)
        ctx.dtype = s.dtype
        ctx.save_for_backward(pack_spikes(s, "SpikeConv2d"), weight)
        return F.conv2d(s, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad_out):
        packed, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_shape = ctx.conf
        s = unpack_spikes(packed, ctx.dtype)
        mask = [
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            bias_shape is not None and ctx.needs_input_grad[2],
        ]
        gi, gw, gb = torch.ops.aten.convolution_backward(
            grad_out,
            s,
            weight,
            list(bias_shape) if bias_shape is not None else None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0, 0],
            groups,
            mask,
        )
        return gi, gw, gb, None, None, None, None


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` for binary spike input that saves the input as ``bool`` for backward.

    Same parameters (names, init) and the same values and gradients as ``nn.Conv2d``; only
    ``padding_mode="zeros"`` and numeric padding are supported.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("SpikeConv2d supports numeric zero padding only")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return super().forward(s)
        return _SpikeConvFn.apply(
            s, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class _SpikeMaxPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, kernel_size, stride, padding):
        ctx.conf = (kernel_size, stride, padding)
        ctx.dtype = s.dtype
        ctx.save_for_backward(pack_spikes(s, "SpikeMaxPool2d"))
        return F.max_pool2d(s, kernel_size, stride, padding)

    @staticmethod
    def backward(ctx, grad_out):
        (packed,) = ctx.saved_tensors
        k, st, p = ctx.conf
        s = unpack_spikes(packed, ctx.dtype)
        _, idx = F.max_pool2d(s, k, st, p, return_indices=True)
        gi = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, s, list(k), list(st), list(p), [1, 1], False, idx
        )
        return gi, None, None, None


class SpikeMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` over binary spikes ``[N, C, H, W]`` that saves only a ``bool`` copy of
    its input (plain max-pool keeps the float input and int64 indices)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and s.requires_grad):
            return super().forward(s)
        pair = nn.modules.utils._pair
        return _SpikeMaxPoolFn.apply(
            s, pair(self.kernel_size), pair(self.stride), pair(self.padding)
        )
