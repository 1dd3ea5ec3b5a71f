"""revsnn.reversible.columns: the temporal-reversible column engine against its plain-autograd
oracle (generic toy levels with BatchNorm, dropout and a module shared by every column)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from revsnn.measure import saved_tensor_bytes
from revsnn.reversible.columns import TemporalColumns
from revsnn.spiking import stateless_spike
from subproc import run_isolated

THRESHOLDS = (0.0, 0.5, 1.0)


class ToyLevel(nn.Module):
    """out = shared(BN(conv(S(lower)) + up(S(upper)))) with dropout; reads states through S."""

    def __init__(
        self, cin: int, c: int, cup: int, shared: nn.Module, first: bool, spike_lower: bool
    ):
        super().__init__()
        self.conv = nn.Conv2d(cin, c, 3, padding=1, bias=False)  # BN follows
        self.up = None if (first or cup == 0) else nn.Conv2d(cup, c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.drop = nn.Dropout(0.2)
        self.shared = shared
        self.spike_lower = spike_lower

    def forward(self, lower, upper=None):
        z = self.conv(stateless_spike(lower) if self.spike_lower else lower)
        if upper is not None:
            z = z + self.up(stateless_spike(upper))
        return self.shared(self.drop(self.bn(z))) + 0.5


def make_engine(T=4, C=(3, 4, 5), cin=2, dtype=torch.float64, seed=0, **kw) -> TemporalColumns:
    torch.manual_seed(seed)
    shared = nn.ModuleList(nn.Conv2d(c, c, 1) for c in C)  # one module per level, all columns
    cols = [
        [ToyLevel(cin if k == 0 else C[k - 1], C[k], C[k + 1] if k + 1 < len(C) else 0,
                  shared[k], t == 0, k > 0) for k in range(len(C))]
        for t in range(T)
    ]
    kw.setdefault("thresholds", THRESHOLDS)
    return TemporalColumns(cols, C, **kw).to(dtype)


def run(engine, mode, s, readout_weights=None):
    """One loss over every column's top state; returns (loss, d s, {name: grad})."""
    engine.memory_mode = mode
    engine.zero_grad(set_to_none=True)
    s = [x.detach().clone().requires_grad_(True) for x in s] if isinstance(s, list) else (
        s.detach().clone().requires_grad_(True))
    torch.manual_seed(123)  # dropout masks
    tops = engine(s)
    loss = sum((i + 1) * (top.sin() * top).mean() for i, top in enumerate(tops))
    loss.backward()
    ds = [x.grad for x in s] if isinstance(s, list) else s.grad
    return loss.detach(), ds, {n: p.grad for n, p in engine.named_parameters()}


def rel(a, b) -> float:
    d, n = float((a - b).abs().max()), float(b.abs().max())
    return 0.0 if d == 0 else d / n


def assert_same(res, ref, tol):
    assert rel(res[0], ref[0]) <= tol
    dss = res[1] if isinstance(res[1], list) else [res[1]]
    drs = ref[1] if isinstance(ref[1], list) else [ref[1]]
    for a, b in zip(dss, drs):
        assert rel(a, b) <= tol
    for name, g in ref[2].items():
        assert g is not None, name
        assert res[2][name] is not None, name
        assert rel(res[2][name], g) <= tol, (name, rel(res[2][name], g))


@pytest.mark.parametrize("per_column", [False, True])
def test_modes_agree_in_float64(per_column):
    T = 5
    engine = make_engine(T=T)
    s = [torch.randn(3, 2, 8, 8, dtype=torch.float64) for _ in range(T)] if per_column else \
        torch.randn(3, 2, 8, 8, dtype=torch.float64)
    ref = run(engine, "none", s)
    for mode in ("checkpoint", "reversible"):
        assert_same(run(engine, mode, s), ref, 1e-10)
    # the states were rebuilt, not stored: only the last column (and s) is kept
    assert engine.memory_summary()["stored_columns"] == []


def test_reversible_recomputes_each_level_once_and_keeps_bn_buffers():
    T = 4
    s = torch.randn(4, 2, 8, 8, dtype=torch.float64)
    buffers = {}
    for mode in ("none", "checkpoint", "reversible"):
        engine = make_engine(T=T)
        engine.recompute_count = 0
        run(engine, mode, s)
        buffers[mode] = {n: b.clone() for n, b in engine.named_buffers()}
        if mode == "reversible":
            assert engine.recompute_count == T * engine.L
    for mode in ("checkpoint", "reversible"):
        for n, b in buffers["none"].items():
            assert torch.equal(buffers[mode][n], b), (mode, n)
    assert int(buffers["reversible"]["levels.0.0.bn.num_batches_tracked"]) == 1


def test_float32_is_bounded_and_flip_free():
    engine = make_engine(T=6, dtype=torch.float32)
    s = torch.randn(4, 2, 8, 8)
    ref = run(engine, "none", s)
    res = run(engine, "reversible", s)
    assert_same(res, ref, 1e-4)
    m = engine.reconstruction_error(s)
    print("float32 rebuild error", m["max_rel_error"], "flips", m["flips"],
          "estimate", m["estimate"])
    assert m["max_rel_error"] <= m["estimate"] or m["flips"] > 0


def test_alpha_floor_keeps_sign():
    engine = make_engine(T=3)
    with torch.no_grad():
        engine.alpha[1][0].fill_(-1e-6)
        engine.alpha[1][1].fill_(0.0)
        engine.alpha[2][2].fill_(3e-4)
    engine(torch.randn(2, 2, 8, 8, dtype=torch.float64))
    assert torch.all(engine.alpha[1][0] == -1e-3)
    assert torch.all(engine.alpha[1][1] == 1e-3)
    assert torch.all(engine.alpha[2][2] == 1e-3)
    assert torch.all(engine.alpha[0][0] == 0.5)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_alpha_near_floor_stores_columns_and_keeps_gradients_right(dtype, tol):
    T = 6
    engine = make_engine(T=T, dtype=dtype, seed=3)
    with torch.no_grad():
        for col in engine.alpha:
            for a in col:
                a.copy_(1e-3 * torch.where(torch.randn_like(a) > 0, 1.0, -1.0))
    s = torch.randn(4, 2, 8, 8, dtype=dtype)
    ref = run(engine, "none", s)
    res = run(engine, "reversible", s)
    assert_same(res, ref, tol)
    summary = engine.memory_summary()
    assert summary["stored_columns"] and set(summary["stored_reasons"]) == {"error"}
    assert summary["est_max_rel_error"] <= summary["tolerance"]
    # without the policy the pure rebuild is measurably wrong: the fallback is what keeps it right
    m = engine.reconstruction_error(s)
    assert m["max_rel_error"] > 1e3 * summary["tolerance"]
    engine.tolerance = math.inf
    bad = run(engine, "reversible", s)
    worst = max(rel(bad[2][n], g) for n, g in ref[2].items())
    assert worst > 1e-3


def test_store_every_and_estimate_bounds_measurement():
    engine = make_engine(T=5, store_every=2)
    s = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    ref = run(engine, "none", s)
    assert_same(run(engine, "reversible", s), ref, 1e-10)
    assert engine.memory_summary()["stored_columns"] == [2, 4]
    assert engine.memory_summary()["stored_reasons"] == ["every", "every"]
    m = engine.reconstruction_error(s)
    assert m["flips"] == 0 and 0 < m["max_rel_error"] <= m["estimate"] < 1e-12


def test_saved_memory_does_not_grow_with_T():
    def saved(T, mode):
        engine = make_engine(T=T, dtype=torch.float32, tolerance=math.inf)  # no fix-ups/stores
        engine.memory_mode = mode
        s = torch.randn(4, 2, 8, 8, requires_grad=True)
        exclude = [*engine.parameters(), *engine.buffers(), s]
        return saved_tensor_bytes(lambda: engine(s)[-1].sum(), exclude=exclude)

    assert saved(2, "reversible") == saved(8, "reversible") > 0
    assert saved(8, "none") > 3 * saved(2, "none")


def test_parameter_hooks_see_the_accumulated_gradient_once():
    engine = make_engine(T=4)
    shared_w = engine.levels[0][1].shared.weight
    assert shared_w is engine.levels[3][1].shared.weight
    seen = []
    handle = shared_w.register_hook(lambda g: seen.append(g.clone()))
    ref = run(engine, "none", torch.randn(2, 2, 8, 8, dtype=torch.float64))
    run(engine, "reversible", torch.randn(2, 2, 8, 8, dtype=torch.float64))
    handle.remove()
    assert len(seen) == 2  # one call per backward, with the sum over the T columns
    assert torch.equal(seen[1], shared_w.grad)
    assert ref[2]["levels.0.1.shared.weight"] is not None


def test_second_backward_and_bad_input_are_clear_errors():
    engine = make_engine(T=3)
    s = torch.randn(2, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    loss = engine(s)[-1].sum()
    loss.backward(retain_graph=False)
    with pytest.raises(RuntimeError, match="second time|retain_graph"):
        loss.backward()
    with pytest.raises(ValueError, match="T=3"):
        engine([s, s])
    with pytest.raises(ValueError, match="one level per channel"):
        TemporalColumns([[nn.Identity()]], [1, 2])
    with pytest.raises(ValueError, match="alpha_floor"):
        make_engine(T=2, alpha_floor=0.0)
    with pytest.raises(ValueError, match="unknown memory mode"):
        make_engine(T=2, memory_mode="fast")


def test_threshold_fixups_work_on_channels_last_states():
    """Regression: rebuilding a channels_last state with sparse fix-ups crashed (no flat view).
    In a child (tests/subproc.py): channels_last crosses native kernels in an unusual layout."""
    run_isolated("from test_columns import threshold_fixups_on_channels_last\n"
                 "threshold_fixups_on_channels_last()", what="channels_last fix-ups")


def threshold_fixups_on_channels_last() -> None:
    import revsnn

    torch.manual_seed(0)
    m = revsnn.create_model("trevsnn_test", num_classes=3, T=8, in_channels=1)
    m = m.to(memory_format=torch.channels_last)
    x = torch.rand(16, 1, 16, 16).to(memory_format=torch.channels_last)
    grads = {}
    for mode in ("none", "reversible"):
        m.set_memory_mode(mode)
        m.zero_grad()
        m(x).sum().backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
    err = (grads["none"] - grads["reversible"]).abs().max() / grads["none"].abs().max()
    assert err < 1e-4


def test_float64_states_rebuild_long_T_without_storing():
    """At alpha = 0.5 the rebuild error doubles per column: float32 states force a stored
    column within T = 16; float64 states (float32 levels) rebuild all 16 columns, stay within
    the float32 tolerance and give the oracle's gradients."""
    T = 16
    s = torch.randn(3, 2, 8, 8)
    narrow = make_engine(T=T, dtype=torch.float32)
    run(narrow, "reversible", s)
    assert narrow.memory_summary()["stored_columns"], "float32 states should need a store"

    wide = make_engine(T=T, dtype=torch.float32, state_dtype=torch.float64)
    ref = run(wide, "none", s)
    res = run(wide, "reversible", s)
    summary = wide.memory_summary()
    assert summary["stored_columns"] == []
    assert summary["est_max_rel_error"] <= summary["tolerance"]
    assert_same(res, ref, 1e-5)
    m = wide.reconstruction_error(s)
    assert m["flips"] == 0 and m["max_rel_error"] < 1e-9
    # the levels still compute (and their parameters train) in float32
    assert all(g.dtype == torch.float32 for g in res[2].values())
    assert res[1].dtype == torch.float32


def test_state_dtype_must_be_floating():
    with pytest.raises(ValueError, match="state_dtype"):
        make_engine(T=2, state_dtype=torch.int32)


def heads(T: int, C: int, classes: int = 3) -> nn.ModuleList:
    """One readout per column: pooled top state -> dropout -> Linear -> BatchNorm1d."""
    return nn.ModuleList(
        nn.Sequential(nn.Flatten(1), nn.Dropout(0.3), nn.Linear(C, classes, bias=False),
                      nn.BatchNorm1d(classes))
        for _ in range(T)
    )


class Pool(nn.Module):
    def forward(self, c):
        return c.mean(dim=(2, 3), keepdim=True)


def test_readout_with_parameters_dropout_and_bn_is_trained_through_the_engine():
    """A readout is an argument of the call: it is recomputed under the same contract as the
    levels (dropout replayed, BatchNorm statistics updated once, hooks fired once)."""
    engine = make_engine(T=4)
    readout = nn.ModuleList(nn.Sequential(Pool(), h) for h in heads(4, 5)).double()
    assert not any("readout" in n for n, _ in engine.named_parameters())
    seen = []
    s = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    results = {}
    for mode in ("none", "checkpoint", "reversible"):
        r = copy.deepcopy(readout)
        r[2][1][2].weight.register_hook(lambda g: seen.append(g is not None))
        engine.memory_mode = mode
        engine.zero_grad(set_to_none=True)
        x = s.clone().requires_grad_(True)
        torch.manual_seed(5)
        outs = engine(x, readout=r)
        loss = sum((i + 1) * (o.sin() * o).sum() for i, o in enumerate(outs))
        loss.backward()
        results[mode] = dict(
            dx=x.grad, grads=[p.grad.clone() for p in r.parameters()],
            engine=[p.grad.clone() for p in engine.parameters()],
            bufs=[b.clone() for b in r.buffers()],
        )
    assert seen == [True] * 3  # once per backward, in every mode
    ref = results["none"]
    for mode in ("checkpoint", "reversible"):
        got = results[mode]
        assert rel(got["dx"], ref["dx"]) <= 1e-10
        for a, b in zip(got["grads"] + got["engine"], ref["grads"] + ref["engine"]):
            assert rel(a, b) <= 1e-10
        for a, b in zip(got["bufs"], ref["bufs"]):
            assert torch.equal(a, b)  # running stats once, num_batches_tracked == 1


@pytest.mark.parametrize("seed", [3, 6])
def test_alpha_at_its_floor_in_float32_keeps_alpha_gradients_to_rounding(seed):
    """float32 levels on float64 states (T-RevSNN's set-up), T = 5, every alpha set to -1e-4 and
    so clamped to -1e-3: the rebuilt states are within the default tolerance (one float32 ulp of
    max|c|), so alpha's gradient -- which reads state values, not spikes -- equals plain
    autograd's to rounding, like every other gradient (with a tolerance of 1e3 eps no column
    is stored and alpha's gradient is off by up to 2.6e-4 relative)."""
    T = 5
    engine = make_engine(T=T, dtype=torch.float32, seed=seed, state_dtype=torch.float64)
    with torch.no_grad():
        for col in engine.alpha:
            for a in col:
                a.fill_(-1e-4)
    s = torch.randn(4, 2, 8, 8)
    ref = run(engine, "none", s)
    res = run(engine, "reversible", s)
    assert all(torch.all(a == -1e-3) for col in engine.alpha for a in col)
    summary = engine.memory_summary()
    eps = torch.finfo(torch.float32).eps
    assert summary["tolerance"] <= eps and summary["est_max_rel_error"] <= summary["tolerance"]
    assert summary["stored_columns"]  # the bound, not luck, keeps it right
    worst_alpha = max(rel(res[2][n], g) for n, g in ref[2].items() if n.startswith("alpha"))
    assert worst_alpha <= 1e-5, worst_alpha
    assert_same(res, ref, 1e-5)
    # the bound is an upper bound: rebuilding all columns from the last one (no stores, no
    # fix-ups), the measured error stays within the estimate -- and exceeds the tolerance, so
    # the stored column was needed
    m = engine.reconstruction_error(s)
    assert m["flips"] == 0
    assert summary["tolerance"] < m["max_rel_error"] <= m["estimate"]
