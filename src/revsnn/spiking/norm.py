"""BatchNorm fused with what follows it, saving only BN's input for backward.

- :func:`norm_spike`: ``neuron(BN(c))`` with a lean neuron (:mod:`revsnn.spiking.binary`). Only
  BN's input ``c`` (which BN's backward needs anyway) is saved, not BN's output; BN's output is
  rebuilt in backward with the same kernel and BN's backward is evaluated in place.
- :func:`norm_split`: ``split(BN(c))`` (ParaRevSNN's merged block); BN's backward runs inside
  the buffer that gathers the parts' gradients.

BN's backward in place (:func:`_bn_backward_into`), with ``x_hat = (x - mu) * invstd``::

    d beta = sum(gy)        d gamma = sum(gy * x_hat)
    dx = gamma * invstd * (gy - d beta / M - x_hat * d gamma / M)     (training)

Channel sums run in float64; results equal ATen's to rounding. Running statistics are updated
exactly once, by the module's own forward.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import binary
from .binary import LeanIF, LeanLIF, cast_to, neuron_backward, neuron_forward

__all__ = ["norm_spike", "norm_split"]


def _bn_uses_batch_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    return bn.training or (bn.running_mean is None and bn.running_var is None)


class _NormSpikeFn(torch.autograd.Function):
    """S = neuron(BN(c)) saving only ``c`` (which BN's backward needs anyway), not BN(c)."""

    @staticmethod
    def forward(ctx, c, weight, bias, bn, neuron, T):
        b = bn(c)  # [T*B, C, ...]; updates running statistics exactly as the plain module
        ctx.bn, ctx.neuron, ctx.T = bn, neuron, T
        ctx.b_dtype = b.dtype  # BN may run in another precision than c under autocast
        ctx.save_for_backward(c, weight, bias)
        # Spikes overwrite BN(c) step by step (B(c)[t] is dead once step t has fired).
        return neuron_forward(neuron, b.unflatten(0, (T, c.shape[0] // T)), overwrite=True)

    @staticmethod
    def backward(ctx, grad_s):
        c_in, weight, bias = ctx.saved_tensors
        c = cast_to(c_in, ctx.b_dtype)
        bn, T = ctx.bn, ctx.T
        train = _bn_uses_batch_stats(bn)
        rm, rv = (None, None) if train else (bn.running_mean, bn.running_var)
        # Rebuild BN(c) with the same kernel (batch statistics are recomputed bit-identically;
        # no running-statistics update), then back through the neuron and BN.
        b, mean, invstd = torch.ops.aten.native_batch_norm(
            c, weight, bias, rm, rv, train, 0.0, bn.eps
        )
        gb = neuron_backward(ctx.neuron, b.unflatten(0, (T, c.shape[0] // T)), grad_s, True)
        del b
        gc, gw, gbias = _bn_backward_into(
            gb.flatten(0, 1), c, weight, mean, invstd, train, bn.running_mean, bn.running_var,
            bn.eps,
        )
        return (cast_to(gc, c_in.dtype) if ctx.needs_input_grad[0] else None,
                cast_to(gw, weight.dtype) if ctx.needs_input_grad[1] else None,
                cast_to(gbias, bias.dtype) if ctx.needs_input_grad[2] else None, None, None, None)


def _bn_backward_into(
    gy: torch.Tensor,
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    mean: torch.Tensor,
    invstd: torch.Tensor,
    train: bool,
    running_mean: Optional[torch.Tensor],
    running_var: Optional[torch.Tensor],
    eps: float,
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """BatchNorm backward over ``[N, C, ...]`` written **into** ``gy`` (no second full tensor).

    With x_hat = (x - mu) * invstd (batch statistics in training, running ones in eval)::

        d beta = sum(gy)        d gamma = sum(gy * x_hat)
        dx = gamma * invstd * (gy - d beta / M - x_hat * d gamma / M)     (training)
        dx = gamma * invstd * gy                                          (eval)

    M = elements per channel. Channel sums run in float64 over chunks of N; equal to ATen's
    ``native_batch_norm_backward`` up to rounding.
    """
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.dim() - 2)
    if not train:
        mean = running_mean
        invstd = torch.rsqrt(running_var + eps)
    mu = mean.reshape(shape)
    inv = invstd.reshape(shape)
    rows = max(1, binary.CHUNK_ELEMENTS // max(1, x[0].numel()))
    dims = [0] + list(range(2, x.dim()))
    d_beta = torch.zeros(C, dtype=torch.float64, device=x.device)
    dot = torch.zeros(C, dtype=torch.float64, device=x.device)  # sum(gy * (x - mu))
    for a in range(0, x.shape[0], rows):
        g_k, x_k = gy[a:a + rows], x[a:a + rows]
        d_beta += g_k.sum(dims, dtype=torch.float64)
        dot += (g_k * (x_k - mu)).sum(dims, dtype=torch.float64)
    d_gamma = (dot * invstd.double()).to(x.dtype)
    scale = inv if weight is None else inv * weight.reshape(shape)
    if train:
        m = x.numel() // C
        g_mean = (d_beta / m).to(x.dtype).reshape(shape)
        proj = (dot / m * invstd.double() ** 2).to(x.dtype).reshape(shape)  # d gamma / M * invstd
        for a in range(0, x.shape[0], rows):
            g_k = gy[a:a + rows]
            g_k.sub_(g_mean).sub_((x[a:a + rows] - mu).mul_(proj)).mul_(scale)
    else:
        gy.mul_(scale)
    return gy, d_gamma, d_beta.to(x.dtype)


def norm_spike(c: torch.Tensor, bn: nn.Module, neuron: nn.Module, T: int) -> torch.Tensor:
    """``neuron(unfold(bn(c)))`` for a time-folded ``c`` ``[T*B, C, ...]`` -> ``[T, B, C, ...]``.

    With a lean neuron (:class:`LeanIF` / :class:`LeanLIF`) and a BatchNorm, only ``c`` is
    saved for backward (BN's own input) and BN(c) is recomputed there; values, gradients and
    running statistics equal the unfused modules. Otherwise the modules run as they are.
    """
    if (
        isinstance(neuron, (LeanIF, LeanLIF))
        and isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and torch.is_grad_enabled()
    ):
        return _NormSpikeFn.apply(c, bn.weight, bn.bias, bn, neuron, T)
    return neuron(bn(c).unflatten(0, (T, c.shape[0] // T)))


class _NormSplitFn(torch.autograd.Function):
    """``split(BN(c), sizes, dim=1)`` saving ``c`` and BN's batch statistics only."""

    @staticmethod
    def forward(ctx, c, weight, bias, bn, sizes):
        train = _bn_uses_batch_stats(bn)
        b = bn(c)  # updates running statistics exactly as the plain module
        mean = invstd = None
        if train:
            var, mean = torch.var_mean(c, [0] + list(range(2, c.dim())), correction=0)
            invstd = torch.rsqrt(var + bn.eps)
        ctx.bn, ctx.train = bn, train
        ctx.save_for_backward(c, weight, mean, invstd)
        return tuple(b.split(list(sizes), dim=1))

    @staticmethod
    def backward(ctx, *grads):
        c, weight, mean, invstd = ctx.saved_tensors
        bn = ctx.bn
        # One buffer gathers the parts' gradients (split's backward would allocate it anyway)
        # and BN's backward is written into it: no second full-size gradient.
        gy = torch.cat(grads, dim=1)
        gc, gw, gbias = _bn_backward_into(
            gy, c, weight, mean, invstd, ctx.train, bn.running_mean, bn.running_var, bn.eps
        )
        return (gc if ctx.needs_input_grad[0] else None,
                gw if ctx.needs_input_grad[1] else None,
                gbias if ctx.needs_input_grad[2] else None, None, None)


def norm_split(c: torch.Tensor, bn: nn.Module, sizes) -> Tuple[torch.Tensor, ...]:
    """``bn(c).split(sizes, dim=1)`` for ``c`` ``[N, C, ...]``, with a leaner backward.

    With a BatchNorm on float32/float64 input outside autocast, only ``c`` (BN's own input)
    and the per-channel batch statistics are saved, and BN's backward runs inside the buffer
    that concatenates the parts' gradients (one full-size gradient instead of two). Values and
    running statistics equal the plain module; gradients equal it up to rounding (the batch
    statistics for backward come from ``torch.var_mean``). Otherwise the module runs as it is.
    """
    if (
        isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and torch.is_grad_enabled()
        and c.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled(c.device.type)
    ):
        return _NormSplitFn.apply(c, bn.weight, bn.bias, bn, tuple(int(n) for n in sizes))
    return tuple(bn(c).split(list(sizes), dim=1))
