"""Memory-lean spiking primitives equal their plain counterparts and save less."""

import copy
import itertools

import pytest
import torch
from torch import nn

import revsnn.spiking.binary as binary
from revsnn.measure import saved_tensor_bytes
from revsnn.spiking import IF, LIF
from revsnn.spiking.binary import (
    LeanAvgPool2d,
    LeanIF,
    LeanLIF,
    SpikeConv2d,
    SpikeMaxPool2d,
    plain_spike_attention,
    spike_attention,
)
from revsnn.spiking.norm import norm_spike, norm_split


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _spikes(shape, dtype=torch.float32, p=0.4):
    return (torch.rand(shape) < p).to(dtype)


NEURONS = [
    (LeanIF, IF, {}),
    (LeanLIF, LIF, {"tau": 1.5}),
    (LeanLIF, LIF, {"tau": 2.0, "decay_input": False}),
]


@pytest.mark.parametrize("chunk", [1 << 18, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lean_neurons_equal_plain(dtype, chunk, monkeypatch):
    monkeypatch.setattr(binary, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(0)
    for (lean, plain, kw), reset, detach in itertools.product(
        NEURONS, [0.0, None, -0.3], [True, False]
    ):
        k = dict(kw, v_reset=reset, detach_reset=detach, v_threshold=0.7)
        x = (torch.randn(5, 3, 6, 7, dtype=dtype) * 1.5).requires_grad_()
        x2 = x.detach().clone().requires_grad_()
        a, b = lean(**k)(x), plain(**k)(x2)
        g = torch.randn_like(a)
        a.backward(g)
        b.backward(g)
        assert torch.equal(a, b), (lean, k)  # spikes are bit-identical
        tol = 1e-14 if dtype == torch.float64 else 1e-6
        assert _rel(x.grad, x2.grad) <= tol, (lean, k)
        if lean is LeanIF and detach:
            assert torch.equal(x.grad, x2.grad)  # IF with ATan: bit-identical


def test_lean_neuron_saves_only_its_input_and_takes_expanded_input():
    x = torch.randn(4, 2, 8, 5, 5, requires_grad=True)
    lean = saved_tensor_bytes(lambda: LeanIF()(x * 1.0).sum())
    plain = saved_tensor_bytes(lambda: IF()(x * 1.0).sum())
    assert lean == x.numel() * 4
    assert plain >= 2 * lean
    base = torch.randn(2, 8, 5, 5, requires_grad=True)
    base2 = base.detach().clone().requires_grad_()
    a = LeanLIF(tau=1.5)(base.unsqueeze(0).expand(4, *base.shape))  # direct encoding view
    b = LIF(tau=1.5)(base2.unsqueeze(0).expand(4, *base.shape))
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(a, b) and _rel(base.grad, base2.grad) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spike_conv_bit_identical_and_packed(dtype):
    torch.manual_seed(0)
    for stride, k, bias in [(1, 3, False), (2, 3, True), (1, 1, True)]:
        c = SpikeConv2d(5, 7, k, stride, k // 2, bias=bias).to(dtype)
        ref = nn.Conv2d(5, 7, k, stride, k // 2, bias=bias).to(dtype)
        ref.load_state_dict(c.state_dict())
        s = _spikes((3, 5, 9, 9), dtype)
        s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
        out = c(s1)
        g = torch.randn_like(out)
        out.backward(g)
        ref(s2).backward(g)
        assert torch.equal(s1.grad, s2.grad) and torch.equal(c.weight.grad, ref.weight.grad)
        if bias:
            assert torch.equal(c.bias.grad, ref.bias.grad)
    s = _spikes((3, 5, 9, 9)).requires_grad_()
    c = SpikeConv2d(5, 7, 3, padding=1)
    saved = saved_tensor_bytes(lambda: c(s).sum(), exclude=[c.weight, c.bias])
    assert saved == s.numel()  # one byte per spike
    with pytest.raises(ValueError, match="binary spikes"):
        c(torch.rand(3, 5, 9, 9, requires_grad=True))


def test_spike_max_pool_and_lean_avg_pool_bit_identical():
    torch.manual_seed(0)
    s = _spikes((4, 3, 9, 9), torch.float64, p=0.2)
    for lean, plain in [(SpikeMaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)),
                        (LeanAvgPool2d(3, 2, 1), nn.AvgPool2d(3, 2, 1))]:
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        ya, yb = lean(a), plain(b)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    x = torch.randn(4, 3, 9, 9, requires_grad=True)
    assert saved_tensor_bytes(lambda: LeanAvgPool2d()(x * 1.0).sum()) == 0
    s32 = s.float().requires_grad_()
    assert saved_tensor_bytes(lambda: SpikeMaxPool2d()(s32).sum()) == s.numel()


def _bn_pair(channels: int, dtype: torch.dtype, train: bool):
    """A BatchNorm with random affine parameters and running variance, and a deep copy."""
    bn = nn.BatchNorm2d(channels).to(dtype)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2)
    bn.train(train)
    return bn, copy.deepcopy(bn)


def _assert_same_bn_step(c, c2, bn, bn2, tol: float) -> None:
    """Input and BN parameter gradients equal to ``tol``; running statistics bit-identical."""
    assert _rel(c.grad, c2.grad) < tol
    assert _rel(bn.weight.grad, bn2.weight.grad) < tol
    assert _rel(bn.bias.grad, bn2.bias.grad) < tol
    for b1, b2 in zip(bn.buffers(), bn2.buffers()):
        assert torch.equal(b1, b2)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("lean,plain,kw", [(LeanIF, IF, {}), (LeanLIF, LIF, {"tau": 1.5})])
def test_norm_spike_equals_bn_then_neuron(train, lean, plain, kw):
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        bn, bn2 = _bn_pair(4, dtype, train)
        c = (torch.randn(6, 4, 5, 5, dtype=dtype) * 2).requires_grad_()
        c2 = c.detach().clone().requires_grad_()
        s1 = norm_spike(c, bn, lean(**kw), 3)
        s2 = plain(**kw)(bn2(c2).unflatten(0, (3, 2)))
        g = torch.randn_like(s1)
        s1.backward(g)
        s2.backward(g)
        assert torch.equal(s1, s2)  # spikes and running statistics are bit-identical
        # BN's backward is evaluated in place (float64 channel sums): equal up to rounding.
        _assert_same_bn_step(c, c2, bn, bn2, 1e-13 if dtype == torch.float64 else 1e-5)
    c = torch.randn(6, 4, 5, 5, requires_grad=True)
    bn = nn.BatchNorm2d(4)
    saved = saved_tensor_bytes(lambda: norm_spike(c * 1.0, bn, lean(**kw), 3).sum(),
                               exclude=list(bn.parameters()))
    assert saved == c.numel() * 4  # only BN's own input


@pytest.mark.parametrize("n_tokens,d", [(16, 4), (3, 8)])  # both association orders
def test_spike_attention_matches_plain(n_tokens, d):
    torch.manual_seed(0)
    q, k, v = (_spikes((2, 3, n_tokens, d), torch.float64) for _ in range(3))
    leaves1 = [t.clone().requires_grad_() for t in (q, k, v)]
    leaves2 = [t.clone().requires_grad_() for t in (q, k, v)]
    a = spike_attention(*leaves1, 0.125)
    b = ((leaves2[0] @ leaves2[1].transpose(-2, -1)) @ leaves2[2]) * 0.125  # published order
    assert torch.equal(a, b)  # products of spikes are exact integers
    assert torch.equal(a, plain_spike_attention(q, k, v, 0.125))
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    for t1, t2 in zip(leaves1, leaves2):
        assert _rel(t1.grad, t2.grad) < 1e-12
    saved = saved_tensor_bytes(lambda: spike_attention(*leaves1, 0.125).sum())
    assert saved == 3 * q.numel()


@pytest.mark.parametrize("train", [True, False])
def test_norm_split_equals_bn_then_split(train):
    """split(BN(c)) with BN's backward in the gradient-gathering buffer: same values, running
    statistics and (to rounding) gradients as the plain module; saves only c and the stats."""
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        bn, bn2 = _bn_pair(6, dtype, train)
        c = (torch.randn(5, 6, 4, 3, dtype=dtype) * 2 + 1).requires_grad_()
        c2 = c.detach().clone().requires_grad_()
        parts = norm_split(c, bn, (2, 4))
        ref = bn2(c2).split([2, 4], dim=1)
        assert [p.shape[1] for p in parts] == [2, 4]
        for a, b in zip(parts, ref):
            assert torch.equal(a, b)
        g = [torch.randn_like(p) for p in parts]
        torch.autograd.backward(parts, g)
        torch.autograd.backward(ref, g)
        _assert_same_bn_step(c, c2, bn, bn2, 1e-12 if dtype == torch.float64 else 1e-5)
    c = torch.randn(5, 6, 4, 3, requires_grad=True)
    bn = nn.BatchNorm2d(6)
    saved = saved_tensor_bytes(lambda: sum(p.sum() for p in norm_split(c * 1.0, bn, (3, 3))),
                               exclude=list(bn.parameters()))
    assert saved == c.numel() * 4 + 2 * 6 * 4  # BN's own input and its batch mean / invstd
