"""BatchNorm folded into the convolution or linear layer before it (inference statistics).

With ``s = gamma / sqrt(running_var + eps)``, a layer ``y = W x + b`` followed by BatchNorm in
evaluation mode is the layer::

    BN(W x + b) = (W x + b - mean) * s + beta = (s * W) x + ((b - mean) * s + beta)

so ``W'[o] = s[o] W[o]`` and ``b' = (b - mean) s + beta`` (exact up to rounding; the arrays are
computed in float64).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
from torch import nn

from .errors import refuse

__all__ = ["layer_arrays", "fold_batchnorm"]


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().to("cpu", torch.float64).numpy().copy()


def layer_arrays(layer: nn.Module) -> Tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of a conv or linear layer as float64 arrays (``b`` zeros when it has none)."""
    w = _np(layer.weight)
    b = _np(getattr(layer, "bias", None))
    return w, (np.zeros(w.shape[0]) if b is None else b)


def fold_batchnorm(
    w: np.ndarray, b: np.ndarray, bn: nn.modules.batchnorm._BatchNorm, where: str
) -> Tuple[np.ndarray, np.ndarray]:
    """``(W', b')`` of ``BN(W x + b)`` with BN's running statistics (see the module docstring)."""
    if bn.running_mean is None or bn.running_var is None:
        raise refuse(where, "BatchNorm without running statistics normalises with each batch's "
                     "own statistics at inference; NIR has no node for it")
    mean, var = _np(bn.running_mean), _np(bn.running_var)
    gamma = np.ones_like(mean) if bn.weight is None else _np(bn.weight)
    beta = np.zeros_like(mean) if bn.bias is None else _np(bn.bias)
    s = gamma / np.sqrt(var + bn.eps)
    return w * s.reshape((-1,) + (1,) * (w.ndim - 1)), (b - mean) * s + beta
