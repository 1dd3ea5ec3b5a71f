"""Weight standardisation (NF-Nets' ScaledStdConv2d), as T-RevSNN uses it.

Per output channel ``o``, over its fan-in ``n = C_in/groups * kh * kw``::

    W_hat[o] = gain[o] * n**-0.5 * (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps)

(biased variance). :func:`standardize_weight` computes it in two passes (mean, then the mean
of the centred squares: as exact as ``torch.var``, several times faster on CPU, where ``var``'s
reduction was a fifth of a T-RevSNN training step) with a closed-form backward that saves no
weight-sized tensor.

A 1x1 :class:`WSConv2d` with a batch below 16 on one CPU thread -- where PyTorch falls back to
its slow reference convolution, one small GEMM per image -- runs as one GEMM over all pixels
(several times faster at T-RevSNN's small level maps; same values up to rounding).

A :class:`WSConv2d` standardises its weight on every call unless a precomputed ``W_hat`` is
lent to it (``weight_override``, set only inside
:func:`revsnn.reversible.weights.lent_weights`): the temporal-reversible engine uses that to
standardise each weight once per step instead of once per column and recomputation.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["WSConv2d", "standardize_weight"]


class _Standardize(torch.autograd.Function):
    """``W_hat = (W - mu) * r * gain * n**-0.5`` per row of ``W`` ([C_out, n]), ``r = (var +
    eps)**-0.5``. Saves only ``W`` (the parameter itself), ``gain`` and the per-row ``mu``, ``r``;
    the backward is the closed form (``x_hat = (W - mu) r``, ``s = gain * n**-0.5 * r``)::

        d gain = n**-0.5 * sum(g * x_hat),       sum(g * x_hat) = r * (sum(g * W) - mu * sum(g))
        d W    = s * (g - mean(g) - x_hat * mean(g * x_hat))
               = s * g + c0 + c1 * W             (per-row constants c0, c1)

    so that neither pass allocates more than its one weight-sized result: on CPU, fresh
    weight-sized buffers (page faults) cost more than the arithmetic. The row sums are exact to
    rounding while ``|mu|`` is not far above the row's spread -- the case for standardised
    weights, whose mean gets no gradient (``mean(d W) = 0``) and starts near 0.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
        n = w.shape[1]
        mu = w.mean(dim=1, keepdim=True)
        centred = w - mu
        norm = torch.linalg.vector_norm(centred, dim=1, keepdim=True)  # sqrt(n * var)
        r = torch.rsqrt(norm * norm / n + eps)
        ctx.save_for_backward(w, gain, mu, r)
        return centred.mul_(r * (gain * n**-0.5))

    @staticmethod
    @once_differentiable
    def backward(ctx, g: torch.Tensor):
        w, gain, mu, r = ctx.saved_tensors
        n = w.shape[1]
        g_sum = g.sum(dim=1, keepdim=True)
        g_x = r * (torch.linalg.vecdot(g, w, dim=1).unsqueeze(1) - mu * g_sum)  # sum(g x_hat)
        dw = dgain = None
        if ctx.needs_input_grad[0]:
            s = gain * (r * n**-0.5)
            c1 = -(g_x / n) * s * r
            c0 = -(g_sum / n) * s - c1 * mu
            dw = torch.addcmul(c0, g, s)
            dw.addcmul_(w, c1)
        if ctx.needs_input_grad[1]:
            dgain = g_x * n**-0.5
        return dw, dgain, None


def standardize_weight(weight: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """``gain * n**-0.5 * (W - mean) / sqrt(var + eps)`` per output channel (dim 0)."""
    w_hat = _Standardize.apply(weight.flatten(1), gain.reshape(-1, 1), float(eps))
    return w_hat.view_as(weight)  # [C_out, n] -> weight's shape


class WSConv2d(nn.Conv2d):
    """Weight-standardised conv with a learnable per-output-channel gain (and a bias)."""

    #: the standardisation's closed-form backward cannot be differentiated again
    first_order_only = "WSConv2d's weight standardisation has a first-order backward"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, tuple] = 1,
        stride: Union[int, tuple] = 1,
        padding: Union[int, tuple, str] = 0,
        dilation: Union[int, tuple] = 1,
        groups: int = 1,
        bias: bool = True,
        eps: float = 1e-6,
        gain_init: float = 1.0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init)))
        self.eps = float(eps)
        self.weight_override: Optional[torch.Tensor] = None

    # the weight-transform protocol of revsnn.reversible.weights
    def transform_parameters(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The parameters ``W_hat`` is computed from, in :meth:`transformed_weight` order."""
        return self.weight, self.gain

    def transformed_weight(
        self, weight: Optional[torch.Tensor] = None, gain: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``W_hat`` from ``weight`` and ``gain`` (default: this module's parameters)."""
        return standardize_weight(
            self.weight if weight is None else weight,
            self.gain if gain is None else gain,
            self.eps,
        )

    def standardized_weight(self) -> torch.Tensor:
        """The weight this conv uses now (the lent ``W_hat`` if any)."""
        if self.weight_override is not None:
            return self.weight_override
        return self.transformed_weight()

    def _pointwise_matmul(self, x: torch.Tensor) -> bool:
        """PyTorch runs a 1x1 conv with a batch below 16 on one CPU thread through its slow
        reference kernel (one small GEMM per image); one batched matmul is several times
        faster there (the same FLOPs). Only that case is rerouted, and only eagerly (compiled
        code picks its own kernels; the thread count is no tensor a graph could hold)."""
        return (
            not torch.compiler.is_compiling()
            and self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding in ((0, 0), 0)
            and self.dilation == (1, 1) and self.groups == 1 and x.dim() == 4
            and x.device.type == "cpu" and x.shape[0] < 16 and torch.get_num_threads() == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pointwise_matmul(x):
            N, C, H, W = x.shape
            w = self.standardized_weight().view(self.out_channels, C)  # [O, C]
            cols = x.transpose(0, 1).reshape(C, N * H * W)  # [C, N*H*W]
            y = w @ cols if self.bias is None else torch.addmm(self.bias.unsqueeze(1), w, cols)
            return y.view(-1, N, H, W).transpose(0, 1)  # [O, N, H, W] -> [N, O, H, W] (a view)
        return F.conv2d(
            x,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )
