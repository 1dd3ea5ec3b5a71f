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

  Spikes are bit-identical to :class:`~revsnn.spiking.IF` / :class:`~revsnn.spiking.LIF`;
  gradients are bit-identical for IF with ATan (the static-image models) and equal to rounding
  otherwise (a vectorised ``exp`` in the Sigmoid surrogate may round differently on a chunk
  boundary; an attached reset sums three terms in another order). The loops run over chunks of
  :data:`CHUNK_ELEMENTS` elements (the neuron is elementwise in B, C, H, W), so their
  temporaries do not grow with the batch.
- BatchNorm fused with what follows it (``norm_spike``, ``norm_split``) lives in
  :mod:`revsnn.spiking.norm`.
- :class:`SpikeConv2d`: an ``nn.Conv2d`` whose binary input is saved as a ``bool`` tensor (1 byte
  per spike instead of 4 or 8) and turned back into floats only inside backward; the gradient is
  ``aten.convolution_backward`` on the identical input, i.e. exactly autograd's (a strided 1x1
  conv on channels_last CPU input subsamples first: :mod:`revsnn.spiking.pointwise`).
- :class:`SpikeMaxPool2d`: max-pool over spikes saving the input as ``bool`` (no float input, no
  int64 indices); backward re-runs the pool with indices on the rebuilt input, sample chunk by
  sample chunk (ties resolve the same way, so the gradient is autograd's).
- :class:`LeanAvgPool2d`: average pool that saves nothing (its backward needs only the shape).
- :func:`spike_attention`: softmax-free attention ``(q k^T) v * scale`` of binary q, k, v saving
  them as ``bool`` (plain autograd keeps them as floats, plus the N x N product).

Spikes are checked to be binary where they are packed; a non-binary input raises ``ValueError``
(it would make the saved copy inexact).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .neuron import IF, LIF, BaseNeuron
from .pointwise import strided_pointwise_input

__all__ = [
    "CHUNK_ELEMENTS",
    "LeanAvgPool2d",
    "LeanIF",
    "LeanLIF",
    "SpikeConv2d",
    "SpikeMaxPool2d",
    "cast_to",
    "neuron_backward",
    "neuron_forward",
    "pack_spikes",
    "plain_spike_attention",
    "spike_attention",
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
#: Elements per chunk of the neuron loops. The neuron is elementwise in (B, C, H, W) and
#: sequential only in T, so running it chunk by chunk gives bit-identical results while the
#: per-step temporaries stay a fixed size whatever the batch.
CHUNK_ELEMENTS = 1 << 18


def _steps(x: torch.Tensor) -> List[torch.Tensor]:
    """Per-time-step flat views ``x[t] -> [M]`` (a copy only where x[t] is not viewable)."""
    return [x[t].reshape(-1) for t in range(x.shape[0])]


def _chunks(m: int) -> List[Tuple[int, int]]:
    return [(a, min(a + CHUNK_ELEMENTS, m)) for a in range(0, m, CHUNK_ELEMENTS)]


def _charge(n: BaseNeuron, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``n.charge(v, x)`` as a new tensor; the common LIF case (decay_input, rest 0) with fewer
    passes: ``(x - v) / tau + v`` equals ``v + (x - (v - 0)) / tau`` bit for bit."""
    if type(n) in (LIF, LeanLIF) and n.decay_input and not n.v_reset:
        return torch.sub(x, v).div_(n.tau).add_(v)
    return n.charge(v, x)


def _fire_chunk(n: BaseNeuron, xs: List[torch.Tensor], a: int, b: int,
                ss: Optional[List[torch.Tensor]], hs: Optional[List[torch.Tensor]]) -> None:
    """Run the neuron over elements a:b of every step, writing S[t] into ``ss[t]`` and H[t]
    into ``hs[t]`` (these may alias ``xs``: step t reads x[t] before writing).

    Same values as :func:`~revsnn.spiking.neuron.fire_and_reset`: S = [H - v_th >= 0] is
    [H >= v_th] (the difference of two normal floats is exact in sign); the hard reset
    H (1 - S) + v_r S is ``masked_fill(S, v_r)`` (equal up to the sign of a zero membrane,
    which no later step or gradient can see); the soft reset is evaluated as written.
    """
    v = n.initial_state(xs[0][a:b])
    for t in range(len(xs)):
        h = _charge(n, v, xs[t][a:b])  # H[t]
        if hs is not None:
            hs[t][a:b] = h
        fired = h >= n.v_threshold  # S[t]
        if ss is not None:
            ss[t][a:b] = fired
        if n.v_reset is None:
            h.sub_(fired.to(h.dtype).mul_(n.v_threshold))  # V = H - S v_th
        else:
            h.masked_fill_(fired, n.v_reset)  # V = H (1 - S) + v_r S
        v = h  # V[t]


def neuron_forward(neuron: BaseNeuron, x: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Spikes of the multi-step neuron over ``x`` [T, B, ...] (no graph); with ``overwrite``
    the spikes are written over ``x`` (over a contiguous copy when ``x`` is not contiguous,
    e.g. channels_last: the loops work on flat per-step views)."""
    x = x.contiguous()
    out = x if overwrite else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    xs, ss = _steps(x), _steps(out)
    for a, b in _chunks(xs[0].numel()):
        _fire_chunk(neuron, xs, a, b, ss, None)
    return out  # [T, B, ...] spikes


def neuron_backward(
    n: BaseNeuron, x: torch.Tensor, grad_s: torch.Tensor, overwrite: bool = False
) -> torch.Tensor:
    """dL/dX of the multi-step neuron from its input ``x`` and dL/dS (chain rule written out).

    Chunk by chunk, the membranes H[t] are rebuilt into one buffer that then receives dL/dX[t]
    step by step (H[t] is dead once step t is done); with ``overwrite`` that buffer is ``x``.
    In-place updates only reorder commutative products and sums (a*b == b*a, a + b == b + a,
    a - b == a + (-b) in IEEE arithmetic) and ``dV (1 - S)`` is a masked copy (equal up to the
    sign of zero), so the result is autograd's (see the module docstring for the exceptions).
    """
    x, grad_s = x.contiguous(), grad_s.contiguous()  # flat per-step views (channels_last too)
    buf = x if overwrite else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    xs, hs, gss = _steps(x), _steps(buf), _steps(grad_s)
    T = len(xs)
    for a, b in _chunks(xs[0].numel()):
        _fire_chunk(n, xs, a, b, None, hs)
        gv: Optional[torch.Tensor] = None  # dL/dV[t]
        for t in reversed(range(T)):
            h = hs[t][a:b]
            z = h - n.v_threshold
            gh = n.surrogate.derivative(z)  # sigma'(H - v_th), becomes dL/dH
            if gv is not None and not n.detach_reset:
                # Reset path through S: hard V = H (1 - S) + v_r S; soft V = H - v_th S.
                if n.v_reset is None:
                    gs = gss[t][a:b] + (-(gv * n.v_threshold))
                else:
                    gs = gss[t][a:b] + (-(gv * h)) + gv * n.v_reset
                gh.mul_(gs)
                del gs
            else:
                gh.mul_(gss[t][a:b])
            if gv is not None:
                if n.v_reset is None:
                    gh.add_(gv)
                else:  # + dL/dV[t] (1 - S[t]) (up to the sign of zero terms)
                    gh.add_(gv.masked_fill(z >= 0, 0.0))
            del z
            if isinstance(n, IF):  # H = V + X: dX = dV = dH
                h.copy_(gh)
                gv = h
            elif n.decay_input:  # H = V + (X - (V - rest)) / tau: dX = dH / tau, dV = dH - dX
                torch.div(gh, n.tau, out=h)
                gv = gh.sub_(h)
            else:  # H = V - (V - rest) / tau + X: dX = dH, dV = dH + (-dH) / tau
                h.copy_(gh)
                gv = gh.add_(gh.neg().div_(n.tau))
            del gh, h
    return buf


class _LeanNeuronFn(torch.autograd.Function):
    """Multi-step neuron saving only its input; membranes rebuilt in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, neuron: BaseNeuron) -> torch.Tensor:
        ctx.neuron = neuron  # hyperparameters only (no parameters, no tensors)
        ctx.save_for_backward(x)
        return neuron_forward(neuron, x)

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        (x,) = ctx.saved_tensors
        return neuron_backward(ctx.neuron, x, grad_s), None


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


_LEAN = ("{} has a first-order backward (it rebuilds what it did not save); build the model "
         "with lean=False")


class LeanIF(IF):
    """IF neuron (``H[t] = V[t-1] + X[t]``) whose backward saves only ``X``; same outputs and
    gradients as :class:`~revsnn.spiking.IF` (see the module docstring)."""

    first_order_only = _LEAN.format("LeanIF")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_lean(self, x)
        return _LeanNeuronFn.apply(x, self)


class LeanLIF(LIF):
    """LIF neuron with a constant ``tau`` whose backward saves only ``X``; same outputs and
    gradients as :class:`~revsnn.spiking.LIF`. (PLIF's learnable tau is not supported.)"""

    first_order_only = _LEAN.format("LeanLIF")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_lean(self, x)
        return _LeanNeuronFn.apply(x, self)


# ----------------------------------------------------------------------------- conv / pool
def cast_to(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """``t`` in ``dtype`` (``None`` and tensors already in it unchanged)."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


class _SpikeConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s, weight, bias, stride, padding, dilation, groups):
        ctx.conf = (stride, padding, dilation, groups, None if bias is None else bias.shape)
        ctx.dtype = s.dtype
        ctx.save_for_backward(pack_spikes(s, "SpikeConv2d"), weight)
        out = F.conv2d(s, weight, bias, stride, padding, dilation, groups)
        ctx.compute_dtype = out.dtype  # differs from s.dtype under autocast
        return out

    @staticmethod
    def backward(ctx, grad_out):
        packed, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_shape = ctx.conf
        conf = (list(stride), list(padding), list(dilation), False, [0, 0], groups)
        bias_sizes = list(bias_shape) if bias_shape is not None else None
        need_i, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias_shape is not None and ctx.needs_input_grad[2]
        # Under autocast the forward ran on casts of s and W: differentiate the same kernel and
        # cast the gradients back, as autograd's cast nodes would.
        cd = ctx.compute_dtype
        grad_out, w = cast_to(grad_out, cd), cast_to(weight, cd)
        gi = gw = gb = None
        if need_w or need_b:
            # Weight/bias gradients first, so the float spikes are dropped before dL/ds exists.
            s = unpack_spikes(packed, cd)
            _, gw, gb = torch.ops.aten.convolution_backward(
                grad_out, s, w, bias_sizes, *conf, [False, need_w, need_b]
            )
            del s
        if need_i:
            # dL/ds reads only the input's shape: pass a zero-stride stand-in (no copy).
            shape_only = packed.new_zeros((), dtype=cd).expand(packed.shape)
            gi = torch.ops.aten.convolution_backward(
                grad_out, shape_only, w, bias_sizes, *conf, [True, False, False]
            )[0]
        return (cast_to(gi, ctx.dtype), cast_to(gw, weight.dtype),
                cast_to(gb, weight.dtype), None, None, None, None)


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` for binary spike input that saves the input as ``bool`` for backward.

    Same parameters (names, init) and the same values and gradients as ``nn.Conv2d``; only
    ``padding_mode="zeros"`` and numeric padding are supported.
    """

    first_order_only = _LEAN.format("SpikeConv2d")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("SpikeConv2d supports numeric zero padding only")

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        sub = strided_pointwise_input(self, s)  # broken upstream kernel: spiking.pointwise
        s, stride = (s, self.stride) if sub is None else (sub, (1, 1))
        fn = _SpikeConvFn.apply if torch.is_grad_enabled() else F.conv2d
        return fn(s, self.weight, self.bias, stride, self.padding, self.dilation, self.groups)


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
        grad_in = torch.empty(packed.shape, dtype=ctx.dtype, device=packed.device)
        # Sample by sample (each is pooled on its own, so this is bit-identical): rebuild the
        # float spikes and the argmax indices of a chunk, then scatter its gradient.
        rows = max(1, CHUNK_ELEMENTS // max(1, packed[0].numel()))
        for a in range(0, packed.shape[0], rows):
            s = unpack_spikes(packed[a:a + rows], ctx.dtype)
            _, idx = F.max_pool2d(s, k, st, p, return_indices=True)
            grad_in[a:a + rows] = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_out[a:a + rows], s, list(k), list(st), list(p), [1, 1], False, idx
            )
        return grad_in, None, None, None


class SpikeMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` over binary spikes ``[N, C, H, W]`` that saves only a ``bool`` copy of
    its input (plain max-pool keeps the float input and int64 indices)."""

    first_order_only = _LEAN.format("SpikeMaxPool2d")

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and s.requires_grad):
            return super().forward(s)
        pair = nn.modules.utils._pair
        return _SpikeMaxPoolFn.apply(
            s, pair(self.kernel_size), pair(self.stride), pair(self.padding)
        )


# ----------------------------------------------------------------------------- attention
def _attention_order(n_tokens: int, head_dim: int) -> bool:
    """True: evaluate ``q (k^T v)`` (cheaper when N > d); False: ``(q k^T) v``."""
    return n_tokens > head_dim


def plain_spike_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """``(q k^T) v * scale`` by autograd over ``[..., N, d]`` (reference; associates the product
    the cheaper way, which gives identical values for binary q, k, v)."""
    if _attention_order(q.shape[-2], q.shape[-1]):
        return (q @ (k.transpose(-2, -1) @ v)) * scale
    return ((q @ k.transpose(-2, -1)) @ v) * scale


class _SpikeAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale):
        ctx.scale = scale
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        ctx.save_for_backward(
            pack_spikes(q, "spike_attention q"), pack_spikes(k, "spike_attention k"),
            pack_spikes(v, "spike_attention v"),
        )
        out = plain_spike_attention(q, k, v, scale)
        ctx.compute_dtype = out.dtype  # differs under autocast
        return out

    @staticmethod
    def backward(ctx, grad):
        cd = ctx.compute_dtype
        q, k, v = (unpack_spikes(b, cd) for b in ctx.saved_tensors)
        g = cast_to(grad, cd) * ctx.scale
        kt = k.transpose(-2, -1)
        if _attention_order(q.shape[-2], q.shape[-1]):
            m = kt @ v  # [.., d, d]
            dq = g @ m.transpose(-2, -1)
            dm = q.transpose(-2, -1) @ g
            dkt = dm @ v.transpose(-2, -1)
            dv = kt.transpose(-2, -1) @ dm
        else:
            a = q @ kt  # [.., N, N]
            da = g @ v.transpose(-2, -1)
            dv = a.transpose(-2, -1) @ g
            dq = da @ kt.transpose(-2, -1)
            dkt = q.transpose(-2, -1) @ da
        dq_t, dk_t, dv_t = ctx.dtypes
        return cast_to(dq, dq_t), cast_to(dkt.transpose(-2, -1), dk_t), cast_to(dv, dv_t), None


def spike_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """Softmax-free spiking attention ``(q k^T) v * scale`` over ``[..., N, d]`` for binary
    q, k, v, saving them as ``bool``; values equal :func:`plain_spike_attention` exactly (all
    products of spikes are small integers) and gradients equal autograd's."""
    if not torch.is_grad_enabled():
        return plain_spike_attention(q, k, v, scale)
    return _SpikeAttentionFn.apply(q, k, v, scale)


# ----------------------------------------------------------------------------- avg-pool
class _LeanAvgPoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding):
        ctx.conf = (kernel_size, stride, padding)
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return F.avg_pool2d(x, kernel_size, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        k, st, p = ctx.conf
        # avg-pool's backward reads only the input's shape: a zero-stride stand-in (no copy).
        shape_only = grad.new_zeros((), dtype=ctx.dtype).expand(ctx.shape)
        gi = torch.ops.aten.avg_pool2d_backward(grad, shape_only, list(k), list(st), list(p),
                                                False, True, None)
        return gi, None, None, None


class LeanAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` (zero padding counted, floor mode) that saves nothing for backward
    (plain autograd keeps the input although only its shape is needed)."""

    first_order_only = _LEAN.format("LeanAvgPool2d")

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1) -> None:
        super().__init__(kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        pair = nn.modules.utils._pair
        return _LeanAvgPoolFn.apply(
            x, pair(self.kernel_size), pair(self.stride), pair(self.padding)
        )
