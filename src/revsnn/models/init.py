"""Weight initialisation of each model family, as the papers' published code initialises it.

=====================  =========================================================================
family                 initialisation
=====================  =========================================================================
RevSResNet, MS-ResNet  :func:`kaiming_fan_out`: conv
ParaRevSNN-ResNet      ``W ~ N(0, 2 / fan_out)``, conv bias 0; BN ``gamma = 1, beta = 0``;
                       ``nn.Linear`` keeps PyTorch's default.
RevSFormer,            :func:`transformer_init`: convs keep PyTorch's default
Spikingformer          ``W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Kaiming uniform, a = sqrt(5))
                       and, where a conv has one, ``b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
                       BN ``gamma = 1, beta = 0``; the classifier ``W ~ N(0, 0.02^2)`` truncated
                       to ``[-2, 2]``, ``b = 0``.
T-RevSNN               :func:`trunc_normal_convs`: every conv (plain, depthwise, weight-
                       standardised) ``W ~ N(0, 0.02^2)`` truncated to ``[-2, 2]``, ``b = 0``;
                       BN ``gamma = 1, beta = 0``; WS gains 1, ``alpha = 0.5``, layer scale
                       ``gamma = 1`` (as constructed).
=====================  =========================================================================

The truncation bounds are absolute (``[-2, 2]`` = 100 standard deviations at std 0.02), as in
the published code, so the truncated normal is a normal in practice.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "TRUNC_STD", "kaiming_fan_out", "transformer_init", "trunc_normal_convs",
    "trunc_normal_linear_",
]

#: standard deviation of the truncated-normal initialisations
TRUNC_STD = 0.02

_CONVS = (nn.Conv1d, nn.Conv2d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _norm_init(m: nn.Module) -> None:
    if m.weight is not None:
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def kaiming_fan_out(module: nn.Module) -> None:
    """RevSResNet / ParaRevSNN / MS-ResNet: Kaiming normal (fan_out) for convolutions, conv
    bias 0; BN ``gamma = 1, beta = 0``; ``nn.Linear`` keeps PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            _norm_init(m)


def trunc_normal_linear_(m: nn.Linear) -> None:
    """``W ~ N(0, 0.02^2)`` truncated to ``[-2, 2]``, ``b = 0``."""
    nn.init.trunc_normal_(m.weight, std=TRUNC_STD, a=-2.0, b=2.0)
    if m.bias is not None:
        nn.init.zeros_(m.bias)


def transformer_init(module: nn.Module) -> None:
    """RevSFormer / Spikingformer: PyTorch's default conv initialisation (weights and biases
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), BN ``gamma = 1, beta = 0``, every ``nn.Linear``
    ``N(0, 0.02^2)`` truncated to ``[-2, 2]`` with zero bias."""
    for m in module.modules():
        if isinstance(m, _CONVS):
            m.reset_parameters()
        elif isinstance(m, _NORMS):
            _norm_init(m)
        elif isinstance(m, nn.Linear):
            trunc_normal_linear_(m)


def trunc_normal_convs(module: nn.Module) -> None:
    """T-RevSNN: every conv ``W ~ N(0, 0.02^2)`` truncated to ``[-2, 2]``, ``b = 0``; BN
    ``gamma = 1, beta = 0``. Other parameters (WS gains, alpha, gamma) keep their constructed
    values."""
    for m in module.modules():
        if isinstance(m, _CONVS):
            nn.init.trunc_normal_(m.weight, std=TRUNC_STD, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS):
            _norm_init(m)
