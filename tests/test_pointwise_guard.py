"""Strided 1x1 convolutions never reach PyTorch's broken channels_last CPU kernel
(revsnn.spiking.pointwise), and every family trains in channels_last without heap corruption.

The guarded path (subsample, then a stride-1 conv) equals the strided conv exactly in float64
(values and every gradient); no registered family calls a strided 1x1 convolution on a
channels_last CPU tensor, forward or backward, in any memory mode; and each family's ``*_test``
model runs forward + backward in channels_last ten times under ``MALLOC_CHECK_=3`` in a child
process (tests/subproc.py), so a native crash fails one test with its message.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import revsnn
from revsnn.spiking import GuardedConv2d
from revsnn.spiking.binary import SpikeConv2d
from revsnn.spiking.pointwise import channels_last_strides, strided_pointwise_input
from subproc import run_isolated

MODELS = revsnn.list_models("*_test")
CL = torch.channels_last


def _grads(conv: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().requires_grad_(True)
    conv.zero_grad()
    y = conv(x)
    y.backward(g)
    return [y.detach(), x.grad, conv.weight.grad] + (
        [] if conv.bias is None else [conv.bias.grad])


CASES = [((2, 4, 9, 7), 2, True, 1), ((3, 6, 8, 8), 2, False, 2), ((2, 5, 10, 11), 3, True, 1),
         ((1, 4, 6, 9), (2, 1), False, 1)]


def equal_to_the_plain_conv(cls, shape, stride, bias, groups) -> None:
    """Values and every gradient of the guarded conv on channels_last input, weight or both
    equal (bit for bit, float64) the plain strided conv's on contiguous tensors."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64)
    if cls is SpikeConv2d:
        x = (x > 0).double()  # binary spikes, as SpikeConv2d requires
    plain = nn.Conv2d(shape[1], 8, 1, stride, bias=bias, groups=groups).double()
    guarded = cls(shape[1], 8, 1, stride, bias=bias, groups=groups).double()
    guarded.load_state_dict(plain.state_dict())  # same parameter names
    assert list(guarded.state_dict()) == list(plain.state_dict())
    ref_out = plain(x)
    g = torch.randn_like(ref_out)
    ref = _grads(plain, x, g)  # contiguous: the strided kernel is not the broken one
    for layout in ("input", "weight", "both"):
        m = copy.deepcopy(guarded)
        xin = x.contiguous(memory_format=CL) if layout != "weight" else x
        if layout != "input":
            m = m.to(memory_format=CL)
        assert strided_pointwise_input(m, xin) is not None, layout  # the guard is taken
        got = _grads(m, xin, g)
        for what, a, b in zip(("out", "dx", "dW", "db"), got, ref):
            assert torch.equal(a, b), (cls.__name__, shape, stride, layout, what)
    with torch.no_grad():  # inference takes the same path
        assert torch.equal(guarded(x.contiguous(memory_format=CL)), ref_out.detach())


def test_guarded_strided_pointwise_conv_equals_the_plain_conv_exactly():
    """GuardedConv2d and SpikeConv2d, strides 2, 3 and (2, 1), with and without bias and
    groups; and the recorder used below sees an unguarded call (in a child: channels_last
    crosses native kernels)."""
    run_isolated("from test_pointwise_guard import *\n"
                 "recorder_sees_an_unguarded_call()\n"
                 "for cls in (GuardedConv2d, SpikeConv2d):\n"
                 "    for case in CASES:\n"
                 "        equal_to_the_plain_conv(cls, *case)\n", timeout=300,
                 what="guarded conv == plain conv")


def test_the_guard_applies_only_to_strided_pointwise_convs_on_channels_last_cpu_tensors():
    x = torch.randn(2, 4, 8, 8)
    strided = GuardedConv2d(4, 8, 1, 2)
    assert strided_pointwise_input(strided, x) is None  # contiguous: nn.Conv2d's own call
    assert strided_pointwise_input(strided, x.contiguous(memory_format=CL)) is not None
    assert strided_pointwise_input(GuardedConv2d(4, 8, 1, 1), x.to(memory_format=CL)) is None
    assert strided_pointwise_input(GuardedConv2d(4, 8, 3, 2), x.to(memory_format=CL)) is None
    assert strided_pointwise_input(GuardedConv2d(4, 8, 1, 2, padding=1),
                                   x.to(memory_format=CL)) is None
    # PyTorch's reading of strides: a contiguous 1x1 weight is not channels_last, its
    # channels_last copy is; an [N, 1, 1, 1] tensor is contiguous
    w = torch.randn(8, 4, 1, 1)
    assert not channels_last_strides(w) and channels_last_strides(w.to(memory_format=CL))
    assert not channels_last_strides(torch.randn(3, 1, 1, 1))
    assert channels_last_strides(x.to(memory_format=CL)) and not channels_last_strides(x)


class StridedPointwiseCalls(TorchDispatchMode):
    """Records every aten convolution (forward or backward) with a 1x1 kernel, a stride > 1
    and a channels_last CPU input or weight: the calls that reach the broken kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.hits = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in ("convolution", "convolution_backward", "mkldnn_convolution"):
            if name == "convolution_backward":
                x, w, stride = args[1], args[2], args[4]
            else:
                x, w, stride = args[0], args[1], args[3]
            if (w.dim() == 4 and tuple(w.shape[-2:]) == (1, 1) and any(s != 1 for s in stride)
                    and x.device.type == "cpu"
                    and (channels_last_strides(x) or channels_last_strides(w))):
                self.hits.append((name, tuple(x.shape), tuple(stride)))
        return func(*args, **kwargs)


def cl_model(name: str, mode: str):
    torch.manual_seed(0)
    m = revsnn.create_model(name, memory_mode=mode).train().to(memory_format=CL)
    x = torch.rand(2, m.in_channels, 8, 8).contiguous(memory_format=CL)
    return m, x


def recorder_sees_an_unguarded_call() -> None:
    """The recorder sees an unguarded strided 1x1 conv on channels_last, so its silence in the
    family children means something."""
    x = torch.rand(2, 4, 8, 8, dtype=torch.float64).contiguous(memory_format=CL)
    w = torch.randn(8, 4, 1, 1, dtype=torch.float64, requires_grad=True)
    with StridedPointwiseCalls() as calls:
        F.conv2d(x, w, stride=2).sum().backward()
    assert {h[0] for h in calls.hits} >= {"convolution", "convolution_backward"}, calls.hits


REPEATS = 10
_CHILD = """
import revsnn, torch
from test_pointwise_guard import StridedPointwiseCalls, cl_model
for mode in [m.value for m in revsnn.create_model({name!r}).supported_modes]:
    m, x = cl_model({name!r}, mode)
    for i in range({repeats}):
        m.zero_grad()
        with StridedPointwiseCalls() as calls:
            loss = m(x).float().square().mean()
            loss.backward()
        assert not calls.hits, ("a strided 1x1 conv on channels_last reached aten", mode,
                                calls.hits[:3])
        bad = [n for n, p in m.named_parameters() if p.grad is not None
               and not torch.isfinite(p.grad).all()]
        assert torch.isfinite(loss) and not bad, (mode, i, bad[:3])
print("ok")
"""


@pytest.mark.parametrize("name", MODELS)
def test_every_family_trains_in_channels_last_under_malloc_check(name):
    """Ten forward + backward passes per memory mode, float32 (oneDNN's dtype), channels_last
    model and input, in a child with MALLOC_CHECK_=3: heap corruption aborts the child and fails
    this test with the child's stderr. No pass calls a strided 1x1 conv on a channels_last CPU
    tensor (forward or backward), and every loss and gradient is finite."""
    out = run_isolated(_CHILD.format(name=name, repeats=REPEATS), timeout=600,
                       what=f"{name} channels_last x{REPEATS}")
    assert out.strip().endswith("ok")
