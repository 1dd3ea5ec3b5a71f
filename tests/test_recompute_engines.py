"""The recompute contract on each engine with hostile user modules: stateful modules (with and
without the reset protocol), parameters owned elsewhere, double backward, couplings mixed and
edited after construction, and parameter gradients released column by column."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reversible_helpers import branch, make_sequence, rel_err, run_mode
from revsnn.reversible import (
    ParaRevCoupling,
    RecomputeError,
    RevCoupling,
    ReversibleSequence,
    TemporalColumns,
)
from revsnn.reversible.part import RecomputedPart
from revsnn.spiking import TimeFold
from test_columns import make_engine
from test_columns import rel as col_rel
from test_columns import run as run_columns
from test_reversible_sequence import grads_err

SAVING = ("checkpoint", "reversible")


class Leaky(nn.Module):
    """Keeps a membrane between calls, as SpikingJelly's neurons do: ``v <- v / 2 + x``,
    output ``tanh(v)``. With ``resettable`` it follows the reset protocol (``reset()``)."""

    def __init__(self, resettable: bool) -> None:
        super().__init__()
        self.v = None
        if resettable:
            self.reset = self._reset

    def _reset(self) -> None:
        self.v = None

    def forward(self, x):
        self.v = x if self.v is None else self.v / 2 + x
        return torch.tanh(self.v)


def _stateful_branch(c, resettable):
    return nn.Sequential(TimeFold(nn.Conv2d(c, c, 3, padding=1)), nn.Dropout(0.2),
                         Leaky(resettable), TimeFold(nn.BatchNorm2d(c)))


def _x(c=3, dtype=torch.float64):
    torch.manual_seed(4)
    return torch.randn(2, 2, 2 * c, 5, 5, dtype=dtype)


# ----------------------------------------------------------------------------- module state
def test_stateful_branch_without_reset_is_refused_by_the_recomputing_modes():
    torch.manual_seed(0)
    seq = ReversibleSequence([RevCoupling(_stateful_branch(3, False), branch(3))]).double()
    run_mode(seq, "none", _x())  # plain autograd is fine
    for mode in SAVING:
        with pytest.raises(RecomputeError, match=r"Leaky .* changed 'v'.*reset\(\)"):
            run_mode(seq, mode, _x())


def test_stateful_branch_with_reset_equals_none_in_every_mode():
    torch.manual_seed(0)
    seq = ReversibleSequence(
        [RevCoupling(_stateful_branch(3, True), _stateful_branch(3, True)) for _ in range(2)]
    ).double()
    ref = run_mode(seq, "none", _x())
    again = run_mode(seq, "none", _x())  # reset before every run: a call is a pure function
    assert torch.equal(again["y"], ref["y"])
    for mode in SAVING:
        got = run_mode(seq, mode, _x())
        assert torch.equal(got["y"], ref["y"])
        assert rel_err(got["dx"], ref["dx"]) <= 1e-10
        assert grads_err(got["grads"], ref["grads"]) <= 1e-10, mode


class _Stem(RecomputedPart):
    def __init__(self, resettable):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.3)
        self.leaky = Leaky(resettable)

    def body(self, x):
        return self.leaky(self.drop(self.bn(self.conv(x))))


@pytest.mark.parametrize("resettable", [False, True])
def test_recomputed_part_state_protocol_dropout_and_bn(resettable):
    torch.manual_seed(0)
    part = _Stem(resettable).double()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)

    def run(mode):
        p = copy.deepcopy(part)
        p.memory_mode = mode
        xr = x.clone().requires_grad_(True)
        torch.manual_seed(2)
        y = p.run(xr)
        (y * y.detach().cos()).sum().backward()
        return y.detach(), xr.grad, [q.grad for q in p.parameters()], [b for b in p.buffers()], p

    ref = run("none")
    for mode in SAVING:
        if not resettable:
            with pytest.raises(RecomputeError, match="changed 'v'"):
                run(mode)
            continue
        y, dx, grads, bufs, p = run(mode)
        assert torch.equal(y, ref[0]) and rel_err(dx, ref[1]) <= 1e-10
        assert all(rel_err(a, b) <= 1e-10 for a, b in zip(grads, ref[2]))
        assert all(torch.equal(a, b) for a, b in zip(bufs, ref[3]))
        assert p.recompute_count == 1


def test_stateful_level_without_reset_is_refused_by_the_column_engine():
    engine = make_engine(T=3)
    engine.levels[1][0].shared = nn.Sequential(engine.levels[1][0].shared, Leaky(False))
    s = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    run_columns(engine, "none", s)
    for mode in SAVING:
        with pytest.raises(RecomputeError, match="changed 'v'"):
            run_columns(engine, mode, s)


# ----------------------------------------------------------------------------- parameters
class _Borrower(nn.Module):
    """Uses a parameter registered in another module (not in its own tree)."""

    def __init__(self, lender: nn.Module) -> None:
        super().__init__()
        self.get = lambda: lender.weight

    def forward(self, x):
        return x * self.get().sum()


def test_a_parameter_owned_elsewhere_is_refused_not_lost():
    torch.manual_seed(0)
    lender = nn.Linear(2, 2).double()
    seq = ReversibleSequence([RevCoupling(_Borrower(lender), branch(3))]).double()
    x = _x().requires_grad_(True)
    seq.memory_mode = "reversible"
    with pytest.raises(RecomputeError, match="does not belong to its modules"):
        seq(x).sum().backward()
    lender.weight.grad = None
    seq.memory_mode = "checkpoint"  # torch.utils.checkpoint keeps the original graph: exact
    torch.manual_seed(1)
    seq(x).sum().backward()
    got = lender.weight.grad.clone()
    lender.weight.grad = None
    seq.memory_mode = "none"
    torch.manual_seed(1)
    seq(x).sum().backward()
    assert rel_err(got, lender.weight.grad) <= 1e-12


def test_column_parameter_gradients_are_accumulated_column_by_column():
    """Each column's parameter gradients reach ``.grad`` as soon as that column's backward is
    done (not in a model-sized buffer until the end): the last column's level weights are
    accumulated after its L levels are recomputed, the first column's at the very end."""
    T = 4
    engine = make_engine(T=T)
    engine.memory_mode = "reversible"
    seen = {}
    for t in (0, T - 1):
        engine.levels[t][0].conv.weight.register_post_accumulate_grad_hook(
            lambda p, t=t: seen.__setitem__(t, engine.recompute_count))
    engine.recompute_count = 0
    s = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    sum(top.sum() for top in engine(s)).backward()
    assert seen[T - 1] == engine.L
    assert seen[0] == T * engine.L


# ----------------------------------------------------------------------------- double backward
def test_create_graph_is_exact_in_checkpoint_mode_and_refused_in_reversible_mode():
    torch.manual_seed(0)
    pairs = [(nn.Sequential(TimeFold(nn.Conv2d(3, 3, 3, padding=1)), nn.Tanh()),
              nn.Sequential(TimeFold(nn.Conv2d(3, 3, 1)), nn.Softplus())) for _ in range(2)]
    seq = ReversibleSequence([RevCoupling(f, g) for f, g in pairs]).double()
    x0 = _x()

    def penalty(mode):
        s = copy.deepcopy(seq)
        s.memory_mode = mode
        x = x0.clone().requires_grad_(True)
        params = list(s.parameters())
        gs = torch.autograd.grad(s(x).square().sum(), [x] + params, create_graph=True)
        sum(g.square().sum() for g in gs).backward()
        return x.grad, [p.grad for p in params]

    ref = penalty("none")
    got = penalty("checkpoint")
    assert rel_err(got[0], ref[0]) <= 1e-10
    assert all(rel_err(a, b) <= 1e-10 for a, b in zip(got[1], ref[1]))
    s = copy.deepcopy(seq)
    s.memory_mode = "reversible"
    x = x0.clone().requires_grad_(True)
    with pytest.raises(RecomputeError, match="create_graph"):
        s(x).square().sum().backward(create_graph=True)
    assert all(p.grad is None for p in s.parameters()) and x.grad is None


# ----------------------------------------------------------------------------- composition
def test_rev_and_pararev_couplings_mixed_in_one_sequence():
    torch.manual_seed(0)
    seq = ReversibleSequence([
        RevCoupling(branch(3), branch(3)), ParaRevCoupling(branch(3), branch(3)),
        ParaRevCoupling(branch(3), branch(3)), RevCoupling(branch(3), branch(3)),
    ]).double()
    x = _x()
    ref = run_mode(seq, "none", x)
    for mode in SAVING:
        got = run_mode(seq, mode, x)
        assert torch.equal(got["y"], ref["y"])
        assert rel_err(got["dx"], ref["dx"]) <= 1e-10
        assert grads_err(got["grads"], ref["grads"]) <= 1e-10, mode
    seq.eval()  # the inverse of the composition (BN in eval mode: a fixed function)
    with torch.no_grad():
        assert rel_err(seq.inverse(seq(x)), x) <= 1e-12


def test_a_sequence_edited_after_construction_runs_its_new_modules():
    torch.manual_seed(0)
    seq = make_sequence("para", 3).double()
    seq.blocks[1].f = branch(3).double()  # a new branch after construction
    seq.blocks.append(ParaRevCoupling(branch(3), branch(3)).double())
    ref = run_mode(seq, "none", _x())
    for mode in SAVING:
        got = run_mode(seq, mode, _x())
        assert rel_err(got["dx"], ref["dx"]) <= 1e-10
        assert got["grads"].keys() == ref["grads"].keys()
        assert grads_err(got["grads"], ref["grads"]) <= 1e-10, mode


def test_columns_engine_hooks_fire_once_with_a_module_shared_by_every_column():
    engine = make_engine(T=3)
    s = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    shared = engine.levels[0][1].shared.weight  # one module for level 1 of every column
    results = {}
    for mode in ("none",) + SAVING:
        calls: list = []
        handle = shared.register_hook(lambda g, calls=calls: calls.append(g is not None))
        results[mode] = run_columns(engine, mode, s)
        handle.remove()
        assert calls == [True], mode
    for mode in SAVING:
        assert col_rel(results[mode][2]["levels.0.1.shared.weight"],
                       results["none"][2]["levels.0.1.shared.weight"]) <= 1e-10


def test_temporal_columns_accepts_no_readout_entry():
    engine = make_engine(T=3)
    s = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    heads = [None, None, nn.Sequential(nn.Flatten(1), nn.LazyLinear(3)).double()]
    with torch.no_grad():
        outs = engine(s, readout=heads)
    assert outs[0] is None and outs[1] is None and outs[2].shape == (2, 3)
    with pytest.raises(ValueError, match="one per column|per column"):
        engine(s, readout=heads[:2])
    assert isinstance(engine, TemporalColumns)


def test_a_16_bit_stream_is_refused_by_the_reversible_mode():
    seq = make_sequence("rev", 2)
    x = torch.randn(2, 2, 6, 4, 4).to(torch.bfloat16).requires_grad_(True)
    with pytest.raises(RecomputeError, match="float32 or float64, got torch.bfloat16"):
        seq(x)
    seq.memory_mode = "checkpoint"  # recomputed from the saved input: exact in any dtype
    seq.to(torch.bfloat16)(x).float().sum().backward()
    assert x.grad is not None
