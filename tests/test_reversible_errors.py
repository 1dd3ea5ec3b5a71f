"""Bad input to the engine is a clear error, never a deep stack trace."""

import pytest
import torch
from torch import nn

from reversible_helpers import Pair, branch, make_sequence
from revsnn.reversible import (
    MemoryMode,
    ParaRevCoupling,
    RevCoupling,
    ReversibleBackwardError,
    ReversibleSequence,
)


def test_odd_channel_count():
    seq = make_sequence("rev", 1)
    with pytest.raises(ValueError, match=r"even channel count \[T, B, 2C"):
        seq(torch.randn(2, 2, 5, 4, 4))


def test_wrong_rank():
    seq = make_sequence("rev", 1)
    with pytest.raises(ValueError, match=r"\[T, B, 2C, \.\.\.\]"):
        seq(torch.randn(6, 4))
    with pytest.raises(TypeError, match="tensor"):
        seq([1, 2, 3])


@pytest.mark.parametrize("mode", list(MemoryMode))
def test_branch_output_of_wrong_shape(mode):
    bad = nn.Conv3d(3, 3, 1, stride=(1, 2, 2))  # halves H and W of [T*?]: wrong shape
    seq = ReversibleSequence([RevCoupling(lambda_module(bad), branch(3))], memory_mode=mode)
    with pytest.raises(ValueError, match=r"F must map a half-stream to the same shape"):
        seq(torch.randn(2, 2, 6, 4, 4, requires_grad=True))


def lambda_module(conv):
    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):  # [T, B, C, H, W] -> [T, B, C, H/2, W/2]
            return self.conv(x.transpose(1, 2)).transpose(1, 2)

    return Wrong()


def test_unknown_memory_mode():
    with pytest.raises(ValueError, match="'none', 'checkpoint', 'reversible'"):
        make_sequence("rev", 1, memory_mode="reversable")
    seq = make_sequence("rev", 1)
    with pytest.raises(ValueError, match="unknown memory mode"):
        seq.memory_mode = "fast"


def test_second_backward_is_a_clear_error():
    seq = make_sequence("rev", 2)
    x = torch.randn(2, 2, 6, 4, 4, requires_grad=True)
    y = seq(x).sum()
    y.backward(retain_graph=False)
    with pytest.raises(ReversibleBackwardError, match="retain_graph=True"):
        y.backward()


def test_second_backward_with_retain_graph_is_correct():
    torch.manual_seed(0)
    seq = make_sequence("rev", 2).double()
    x = torch.randn(2, 2, 6, 4, 4, dtype=torch.double, requires_grad=True)
    y = seq(x).sum()
    y.backward(retain_graph=True)
    first = x.grad.clone()
    y.backward()
    torch.testing.assert_close(x.grad, 2 * first)


def test_bad_blocks():
    with pytest.raises(TypeError, match="must be couplings"):
        ReversibleSequence([nn.Identity()])
    with pytest.raises(TypeError, match="nn.Module"):
        RevCoupling(lambda x: x, branch(2))
    with pytest.raises(ValueError, match="at least one block"):
        ReversibleSequence([])
    with pytest.raises(ValueError, match="have 2 such pairs, got 1 merged"):
        ReversibleSequence(
            [
                ParaRevCoupling(branch(2), None),
                ParaRevCoupling(None, None),
                ParaRevCoupling(None, branch(2)),
            ],
            merged=[Pair(branch(2), branch(2))],
        )
    with pytest.raises(ValueError, match=r"branch F of the pair fused by merged\[0\] must be None"):
        ReversibleSequence(
            [ParaRevCoupling(branch(2), None), ParaRevCoupling(branch(2), branch(2))],
            merged=[Pair(branch(2), branch(2))],
        )
    with pytest.raises(ValueError, match="have 0 such pairs, got 1 merged"):
        ReversibleSequence([RevCoupling(branch(2), branch(2))], merged=[Pair(branch(2), branch(2))])
    with pytest.raises(ValueError, match="branch G of a coupling is None"):
        ReversibleSequence([ParaRevCoupling(branch(2), None)])


def test_pair_stages_false_cannot_be_merged_and_runs_one_branch_per_stage():
    with pytest.raises(TypeError, match="pair_stages"):
        make_sequence("para_merged", 2, pair_stages=False)
    seq = make_sequence("para", 3, pair_stages=False)
    assert len(seq._schedule()[0]) == 6  # F_0, G_0, F_1, G_1, F_2, G_2: one branch per stage
    assert len(make_sequence("para", 3)._schedule()[0]) == 4  # F_0, G_0+F_1, G_1+F_2, G_2
