"""Initialisation per family, as the published code does it (distribution family and parameters
of every tensor, tested per tensor with a Kolmogorov-Smirnov distance)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import revsnn
from revsnn.models.init import TRUNC_STD
from revsnn.spiking import WSConv2d

# KS critical value at significance 1e-6 (c = sqrt(-ln(alpha / 2) / 2)): deterministic seeds,
# so a tensor drawn from the stated distribution fails with probability ~1e-6 per tensor
KS_C = math.sqrt(-math.log(0.5e-6) / 2)
MAX_SAMPLES = 20_000  # elements are i.i.d.: a prefix of a large tensor is a sample of it


def _ks(x: torch.Tensor, cdf) -> float:
    """sup |F_n - F| of the sample ``x`` against the continuous CDF ``cdf``."""
    x = x.detach().double().flatten()[:MAX_SAMPLES].sort().values
    n = x.numel()
    f = cdf(x)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - f, f - (i - 1) / n).max())


def _normal_cdf(std: float):
    return lambda x: 0.5 * (1 + torch.erf(x / (std * math.sqrt(2))))


def _uniform_cdf(bound: float):
    return lambda x: ((x + bound) / (2 * bound)).clamp(0, 1)


def _follows(x: torch.Tensor, cdf) -> bool:
    return _ks(x, cdf) < KS_C / math.sqrt(min(x.numel(), MAX_SAMPLES))


def _unique_modules(model: nn.Module, kind):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]


def _check_norms(model: nn.Module) -> int:
    norms = _unique_modules(model, (nn.BatchNorm1d, nn.BatchNorm2d))
    for name, bn in norms:
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0), name
    return len(norms)


def test_ks_detects_the_old_initialisations():
    """The test has power: Kaiming normal (fan_out) and PyTorch's default conv init are told
    apart from N(0, 0.02^2) and from each other on tensors of the sizes tested below."""
    torch.manual_seed(0)
    dw = nn.Conv2d(64, 64, 3, groups=64)  # PyTorch default: U(+-1/3)
    assert not _follows(dw.weight, _normal_cdf(TRUNC_STD))
    nn.init.trunc_normal_(dw.weight, std=TRUNC_STD)
    assert _follows(dw.weight, _normal_cdf(TRUNC_STD))
    conv = nn.Conv2d(48, 96, 3)
    assert _follows(conv.weight, _uniform_cdf(1 / math.sqrt(48 * 9)))
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    assert not _follows(conv.weight, _uniform_cdf(1 / math.sqrt(48 * 9)))
    assert _follows(conv.weight, _normal_cdf(math.sqrt(2 / (96 * 9))))


@pytest.mark.parametrize("name", ["trevsnn_tiny", "trevsnn_cifar", "trevsnn_tiny_bptt"])
def test_trevsnn_every_conv_is_truncated_normal(name):
    """Published T-RevSNN: every conv (plain, depthwise, weight-standardised, heads) has
    W ~ N(0, 0.02^2) truncated to [-2, 2] and zero bias; BN 1 / 0; gains 1, alpha 0.5,
    layer scale 1."""
    torch.manual_seed(0)
    model = revsnn.create_model(name, num_classes=1000 if "tiny" in name else 10)
    convs = _unique_modules(model, nn.Conv2d)
    kinds = {"depthwise": 0, "ws": 0, "plain": 0}
    for cname, conv in convs:
        w = conv.weight
        assert w.abs().max() <= 2.0, cname
        assert _follows(w, _normal_cdf(TRUNC_STD)), (cname, _ks(w, _normal_cdf(TRUNC_STD)))
        if conv.bias is not None:
            assert torch.all(conv.bias == 0), cname
        if isinstance(conv, WSConv2d):
            kinds["ws"] += 1
            assert torch.all(conv.gain == 1), cname
        elif conv.groups > 1:
            kinds["depthwise"] += 1
        else:
            kinds["plain"] += 1
    assert min(kinds.values()) > 0, kinds
    _check_norms(model)
    for pname, p in model.named_parameters():
        if "alpha" in pname:
            assert torch.all(p == 0.5), pname
        elif pname.endswith("gamma"):
            assert torch.all(p == 1), pname
    # a reset classifier is initialised the same way
    model.reset_classifier(7)
    head = model.get_classifier()
    for _, conv in _unique_modules(head, nn.Conv2d):
        assert _follows(conv.weight, _normal_cdf(TRUNC_STD)) and torch.all(conv.bias == 0)


@pytest.mark.parametrize("name", ["revsformer_2_256", "revsformer_2_384", "spikingformer_2_384"])
def test_revsformer_default_convs_and_truncated_normal_classifier(name):
    """Published RevSFormer / Spikingformer: convs keep PyTorch's default, weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (the q/k/v/proj Conv1d of the published code have the
    fan-in of our 1x1 convs); BN 1 / 0; classifier N(0, 0.02^2) truncated, bias 0."""
    torch.manual_seed(0)
    model = revsnn.create_model(name)
    convs = _unique_modules(model, nn.Conv2d)
    with_bias = 0
    for cname, conv in convs:
        fan_in = conv.weight[0].numel()
        bound = 1 / math.sqrt(fan_in)
        w = conv.weight
        assert w.abs().max() <= bound, cname
        assert _follows(w, _uniform_cdf(bound)), (cname, _ks(w, _uniform_cdf(bound)))
        if conv.bias is not None:  # attention output projection and MLP convs
            with_bias += 1
            b = conv.bias
            assert b.abs().max() <= bound and b.abs().min() > 0, cname
            assert _follows(b, _uniform_cdf(bound)), cname
    assert with_bias == 3 * model.depth  # proj, fc1, fc2 per block
    assert _check_norms(model) > 0
    fc = model.get_classifier()
    assert isinstance(fc, nn.Linear) and torch.all(fc.bias == 0)
    assert _follows(fc.weight, _normal_cdf(TRUNC_STD))
    model.reset_classifier(5)
    fc = model.get_classifier()
    assert fc.weight.shape == (5, fc.in_features) and torch.all(fc.bias == 0)
    assert fc.weight.abs().max() < 0.2  # N(0, 0.02^2), not the Linear default U(+-1/sqrt(in))


@pytest.mark.parametrize("name", ["revs_resnet21", "ms_resnet18"])
def test_resnets_keep_kaiming_fan_out(name):
    """RevSResNet / MS-ResNet (already as published): convs N(0, 2 / fan_out), BN 1 / 0."""
    torch.manual_seed(0)
    model = revsnn.create_model(name)
    for cname, conv in _unique_modules(model, nn.Conv2d):
        std = math.sqrt(2 / (conv.out_channels * conv.weight[0, 0].numel()))
        assert _follows(conv.weight, _normal_cdf(std)), cname
    _check_norms(model)
