"""Weight standardisation (revsnn.spiking.weight_standardization) and the weight transforms the
column engine computes once per step and lends to its columns (revsnn.reversible.weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revsnn.reversible.columns import TemporalColumns
from revsnn.reversible.weights import LentWeights, lent_weights, transformed_modules
from revsnn.spiking import WSConv2d, stateless_spike
from revsnn.spiking.weight_standardization import standardize_weight


def reference_ws(w: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """The textbook formula with torch.var (plain autograd)."""
    n = w[0].numel()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return (w - mean) * torch.rsqrt(var + eps) * (gain * n**-0.5)


def test_standardize_matches_formula_and_gradcheck():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    gain = (torch.rand(6, 1, 1, 1, dtype=torch.float64) + 0.5).requires_grad_(True)
    out = standardize_weight(w, gain, 1e-6)
    ref = reference_ws(w, gain, 1e-6)
    assert out.shape == w.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)
    # per output channel: mean 0, variance gain^2 / n (eps negligible here)
    flat = out.detach().flatten(1)
    n = flat.shape[1]
    torch.testing.assert_close(flat.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-15,
                               rtol=0)
    torch.testing.assert_close(flat.var(1, unbiased=False), gain.detach().flatten() ** 2 / n)
    g = torch.randn_like(out)
    ga = torch.autograd.grad(out, (w, gain), g)
    gb = torch.autograd.grad(ref, (w, gain), g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: standardize_weight(a, b, 1e-3), (w, gain))


def test_wsconv_uses_lent_weight_and_restores():
    conv = WSConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    lent = torch.zeros_like(conv.weight)
    with lent_weights([conv], [lent]):
        assert conv.weight_override is lent
        torch.testing.assert_close(conv(x), conv.bias.view(1, -1, 1, 1).expand(2, 4, 5, 5))
    assert conv.weight_override is None
    with pytest.raises(ValueError, match="2 weights"):
        with lent_weights([conv], [lent, lent]):
            pass


def test_lent_leaves_give_the_parameter_gradients_at_the_last_use():
    """Three steps: conv a, then a shared conv b, then a again; a's W_hat lives until step 3.

    float64, so that the summation order of the two routes (one graph vs lent leaves) cannot
    move the comparison past its tolerance on any CPU's kernels."""
    torch.manual_seed(1)
    a, b = WSConv2d(3, 3, 1).double(), WSConv2d(3, 3, 3, padding=1).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    steps = [[a], [b], [a, b]]

    def run(lend=None):
        y = x
        for step in steps:
            for m in step:
                y = m(y)
        return (y ** 2).sum()

    params = [*a.transform_parameters(), *b.transform_parameters()]
    ref = dict(zip(map(id, params), torch.autograd.grad(run(), params)))
    # the same chain as three explicit steps, with leaves lent by LentWeights
    lw = LentWeights(steps, leaves=True)
    y, outs = x, []
    for step in steps:
        with lw.lend(step) as w_hats:
            for m in step:
                y = m(y)
        outs.append((step, w_hats))
    loss = (y ** 2).sum()
    assert outs[0][1][0] is outs[2][1][0]  # the same W_hat of a, lent twice
    got = {}
    (ga, gb) = torch.autograd.grad(loss, [outs[0][1][0], outs[1][1][0]])
    lw.add_grad(a, ga)
    lw.add_grad(b, gb)
    for step, _ in outs:
        released = lw.release(step)
        for pid, g in released.items():
            got[pid] = got.get(pid, 0) + g
        if step != [a, b]:  # a and b are used again in step 3: kept, no gradient yet
            assert set(lw.entries) == {id(a), id(b)} and released == {}
    assert lw.entries == {}
    assert set(got) == set(ref)
    for pid, g in ref.items():
        torch.testing.assert_close(got[pid], g, rtol=1e-10, atol=1e-12)


def test_lent_weights_without_leaves_follow_grad_mode():
    conv = WSConv2d(3, 4, 1)
    lw = LentWeights([[conv], [conv]])
    with torch.no_grad():
        (w,) = lw.weights([conv])
    assert not w.requires_grad and lw.release([conv]) == {} and id(conv) in lw.entries
    lw.release([conv])
    assert lw.entries == {}
    (w,) = LentWeights([[conv]]).weights([conv])
    assert w.requires_grad and w.grad_fn is not None  # plain autograd carries the gradient


class WSLevel(nn.Module):
    """out = shared(WSconv(S(lower)) + up(S(upper))): a WS conv per column plus one shared."""

    def __init__(self, cin: int, c: int, cup: int, shared: nn.Module, spike: bool):
        super().__init__()
        self.conv = WSConv2d(cin, c, 3, padding=1)
        self.up = WSConv2d(cup, c, 1) if cup else None
        self.shared = shared
        self.spike = spike

    def forward(self, lower, upper=None):
        z = self.conv(stateless_spike(lower) if self.spike else lower)
        if upper is not None:
            z = z + self.up(stateless_spike(upper))
        return self.shared(z) + 0.5


def make_ws_engine(T=3, C=(3, 4), seed=0):
    torch.manual_seed(seed)
    shared = nn.ModuleList(WSConv2d(c, c, 1) for c in C)
    cols = [[WSLevel(2 if k == 0 else C[k - 1], C[k], C[k + 1] if k + 1 < len(C) else 0,
                     shared[k], k > 0) for k in range(len(C))] for _ in range(T)]
    return TemporalColumns(cols, C, thresholds=(0.0, 0.5, 1.0)).double()


@pytest.mark.parametrize("mode", ["reversible", "checkpoint"])
def test_columns_with_ws_levels_match_plain_autograd(mode):
    eng = make_ws_engine()
    s = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    calls = {}

    def grads(memory_mode):
        eng.memory_mode = memory_mode
        eng.zero_grad(set_to_none=True)
        x = s.clone().requires_grad_(True)
        loss = sum((i + 1) * (top.sin() * top).mean() for i, top in enumerate(eng(x)))
        loss.backward()
        return x.grad, {n: p.grad for n, p in eng.named_parameters()}

    ref_x, ref = grads("none")
    # a hook on a shared WS weight sees the total once, whatever the mode
    shared_w = eng.levels[0][0].shared.weight
    shared_w.register_hook(lambda g: calls.__setitem__("n", calls.get("n", 0) + 1))
    calls.clear()
    got_x, got = grads(mode)
    assert calls["n"] == 1
    torch.testing.assert_close(got_x, ref_x, rtol=1e-10, atol=1e-12)
    assert set(got) == set(ref)
    unused = {n for n, g in ref.items() if g is None}  # the first column's Up paths
    assert unused == {n for n, g in got.items() if g is None}
    assert unused and all(".up." in n and n.startswith("levels.0.") for n in unused)
    for name, g in ref.items():
        if g is not None:
            torch.testing.assert_close(got[name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_engine_transforms_each_weight_once_per_forward(monkeypatch):
    eng = make_ws_engine()
    modules = transformed_modules(eng.levels)
    assert len(modules) == len({id(m) for m in modules})
    counts = {}
    original = WSConv2d.transformed_weight

    def counting(self, *args):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, *args)

    monkeypatch.setattr(WSConv2d, "transformed_weight", counting)
    s = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    for mode in ("none", "reversible"):
        counts.clear()
        eng.memory_mode = mode
        sum(top.sum() for top in eng(s)).backward()
        # none: once per forward; reversible: once in the forward, once in the backward
        expected = 1 if mode == "none" else 2
        assert set(counts) == {id(m) for m in modules}
        assert set(counts.values()) == {expected}, (mode, counts)


def test_stateless_spike_without_graph_equals_with_graph():
    z = torch.linspace(-1, 2, 61)
    with torch.no_grad():
        fast = stateless_spike(z)
    slow = stateless_spike(z.clone().requires_grad_(True))
    assert torch.equal(fast, slow.detach())
    assert fast.dtype == z.dtype and not fast.requires_grad


def test_reversible_step_holds_only_the_current_and_shared_weights(monkeypatch):
    import revsnn
    from revsnn.models.objective import column_loss

    m = revsnn.create_model("trevsnn_test", num_classes=10, T=3, memory_mode="reversible")
    total = len({id(mod) for mod in transformed_modules(m.columns.levels)})
    alive = []
    original = LentWeights.weights

    def recording(self, modules):
        out = original(self, modules)
        alive.append((self.leaves, len(self.entries)))
        return out

    monkeypatch.setattr(LentWeights, "weights", recording)
    column_loss(m.forward_heads(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1])).backward()
    shared = len(m.shared)  # block 2's pw2 of every level, used by every column
    per_level = 3  # block 1's pw1 and pw2, block 2's pw1
    assert total == 3 * 4 * per_level + shared
    assert {leaves for leaves, _ in alive} == {False, True}  # forward, then backward leaves
    assert max(n for _, n in alive) <= shared + per_level < total


def test_pointwise_cpu_path_equals_conv(monkeypatch):
    """1x1 WS convs at batch < 16 on one CPU thread run as one GEMM: same values and grads."""
    torch.manual_seed(3)
    conv = WSConv2d(6, 5, 1).double()
    x = torch.randn(3, 6, 4, 2, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert conv._pointwise_matmul(x)
    assert not conv._pointwise_matmul(torch.randn(16, 6, 4, 2))  # batch >= 16: PyTorch's conv
    assert not WSConv2d(6, 5, 3, padding=1)._pointwise_matmul(x)
    y = conv(x)
    ref = torch.nn.functional.conv2d(x, conv.standardized_weight(), conv.bias)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    got = torch.autograd.grad(y, [x, conv.weight, conv.gain, conv.bias], g)
    want = torch.autograd.grad(ref, [x, conv.weight, conv.gain, conv.bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
