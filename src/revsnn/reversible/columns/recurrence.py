"""The temporal-reversible recurrence of one level and its inverse, written once.

With ``L_k^t`` the level output of column t (``c^0 = 0``)::

    c_k^t     = L_k^t + alpha_k^t * c_k^{t-1}
    c_k^{t-1} = (c_k^t - L_k^t) / alpha_k^t
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["update", "inverse_step"]


def update(out: torch.Tensor, alpha: torch.Tensor,
           prev: Optional[torch.Tensor]) -> torch.Tensor:
    """``c_k^t = L_k^t + alpha_k^t * c_k^{t-1}`` (``prev=None``: the first column, c^0 = 0)."""
    prev = prev if prev is not None else torch.zeros_like(out)
    return out + alpha.to(out.dtype) * prev


def inverse_step(c: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``c_k^{t-1} = (c_k^t - L_k^t) / alpha_k^t``."""
    return (c - out) / alpha.to(c.dtype)
