"""T-RevSNN models: parameter counts, the three memory modes against the plain-autograd oracle,
encode-once, event columns, explicit weight sharing, the BPTT counterpart, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import revsnn
from revsnn.measure import saved_tensor_bytes
from revsnn.models.objective import column_loss
from revsnn.models.trevsnn import TRevSNN
from revsnn.models.trevsnn_bptt import TRevSNNBPTT
from revsnn.reversible.check import CallCounter

VARIANTS = ["trevsnn_tiny", "trevsnn_small", "trevsnn_tiny_dvs", "trevsnn_cifar", "trevsnn_test",
            "trevsnn_tiny_bptt", "trevsnn_cifar_bptt"]


def rel(a, b) -> float:
    d, n = float((a - b).abs().max()), float(b.abs().max())
    return 0.0 if d == 0 else d / n


COUNTS = [("trevsnn_tiny", 17_203_856), ("trevsnn_small", 32_331_312)]


@pytest.mark.parametrize("name,count", COUNTS)
def test_published_parameter_counts(name, count):
    with torch.device("meta"):  # count only: no memory, no init cost
        m = revsnn.create_model(name, num_classes=1000)
    assert sum(p.numel() for p in m.parameters()) == count


def test_every_variant_is_registered_and_takes_the_common_arguments():
    assert set(VARIANTS) <= set(revsnn.list_models("trevsnn*"))
    with torch.device("meta"):
        for name in VARIANTS:
            mode = "checkpoint"
            m = revsnn.create_model(name, num_classes=7, T=3, memory_mode=mode, in_channels=1)
            assert (m.T, m.num_classes, m.in_channels, m.memory_mode.value) == (3, 7, 1, mode)


def step(mode, x, y, T=3, dtype=torch.float64, seed=0, sgd=False, name="trevsnn_test"):
    torch.manual_seed(seed)
    m = revsnn.create_model(name, num_classes=10, T=T, memory_mode=mode).to(dtype)
    x = x.to(dtype).clone().requires_grad_(True)
    loss = column_loss(m.forward_heads(x), y)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    if sgd:
        torch.optim.SGD(m.parameters(), lr=0.1).step()
    return m, loss.detach(), x.grad, grads


def test_modes_agree_in_float64_and_after_an_sgd_step():
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 3, 5, 9])
    ref = step("none", x, y, T=4, sgd=True)
    assert len(ref[3]) == len(list(ref[0].parameters()))  # every parameter gets a gradient
    for mode in ("checkpoint", "reversible"):
        res = step(mode, x, y, T=4, sgd=True)
        assert rel(res[1], ref[1]) <= 1e-12 and rel(res[2], ref[2]) <= 1e-10
        for n, g in ref[3].items():
            assert rel(res[3][n], g) <= 1e-10, (mode, n)
        ref_state, state = ref[0].state_dict(), res[0].state_dict()  # weights and BN buffers
        assert ref_state.keys() == state.keys()
        for k, v in ref_state.items():
            assert torch.allclose(state[k], v, rtol=1e-10, atol=1e-12), (mode, k)


def test_float32_is_bounded():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8)
    ref = step("none", x, y, T=5, dtype=torch.float32)
    res = step("reversible", x, y, T=5, dtype=torch.float32)
    worst = max(rel(res[3][n], g) for n, g in ref[3].items())
    m = res[0].reconstruction_error(x)
    print(f"float32: worst relative grad difference {worst:.2e}; pure-rebuild flips {m['flips']}, "
          f"error {m['max_rel_error']:.2e}; stored {res[0].memory_summary()['stored_columns']}")
    assert rel(res[1], ref[1]) <= 1e-6 and rel(res[2], ref[2]) <= 1e-4 and worst <= 1e-3


def test_stem_runs_once_per_image_whatever_T():
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    for T in (1, 2, 5):
        for mode in ("none", "checkpoint", "reversible"):
            m = revsnn.create_model("trevsnn_test", T=T, memory_mode=mode)
            with CallCounter({"stem": m.stem}) as calls:
                column_loss(m.forward_heads(x), y).backward()
            assert calls["stem"] == 1, (T, mode)


def test_block2_pw2_dw2_are_one_module_per_level():
    m = revsnn.create_model("trevsnn_test", T=3)
    for k in range(4):
        tails = {(id(lv[k].block2.pw2), id(lv[k].block2.dw2)) for lv in m.columns.levels}
        assert tails == {(id(m.shared[k].pw2), id(m.shared[k].dw2))}
        assert len({id(lv[k].block1.pw2) for lv in m.columns.levels}) == 3  # block 1: per column
        assert m.columns.levels[0][k].up is None and m.columns.levels[0][k].block2.gamma is None


def test_heads_one_per_column_and_forward_is_the_last():
    m = revsnn.create_model("trevsnn_test", T=5, num_classes=6).eval()
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        heads = m.forward_heads(x)
        assert len(heads) == 5 and all(h.shape == (3, 6) for h in heads)
        assert torch.equal(m(x), heads[-1])
    m.reset_classifier(4)
    assert m(x).shape == (3, 4)


@pytest.mark.parametrize("size", [32, 28, 8])
def test_cifar_stem_keeps_small_images(size):
    m = revsnn.create_model("trevsnn_cifar", in_channels=1, T=2)
    assert m(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_event_columns_get_exactly_their_own_frame():
    T = 4
    m = TRevSNN(channels=(4, 8, 8, 8), T=T, stem="events", in_channels=2, num_classes=5)
    x = torch.rand(T, 2, 2, 8, 8)
    seen = {}
    def record(t):
        def hook(_module, inp, _out):
            seen.setdefault(t, inp[0])  # the first call is the forward (the backward recomputes)

        return hook

    hooks = [m.columns.levels[t][0].entry.register_forward_hook(record(t)) for t in range(T)]
    column_loss(m.forward_heads(x), torch.tensor([0, 4])).backward()
    for h in hooks:
        h.remove()
    for t in range(T):
        assert torch.equal(seen[t], x[t])
    with pytest.raises(ValueError, match="T=4 but got 5 frames"):
        m(torch.rand(5, 2, 2, 8, 8))
    with torch.device("meta"):
        dvs = revsnn.create_model("trevsnn_tiny_dvs")
    assert dvs.T == 8 and len(dvs.heads) == 8 and dvs.in_channels == 2


def test_bad_input_is_a_clear_error():
    m = revsnn.create_model("trevsnn_test", T=2)
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="static image"):
        m(torch.randn(2, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="expects images"):
        m(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="T .* >= 1"):
        revsnn.create_model("trevsnn_test", T=0)
    with pytest.raises(ValueError, match="unknown memory mode"):
        revsnn.create_model("trevsnn_test", memory_mode="fast")
    with pytest.raises(ValueError, match="supported: 'none', 'checkpoint'"):
        revsnn.create_model("trevsnn_cifar_bptt", memory_mode="reversible")


def test_bptt_counterpart_is_the_same_network_at_one_step():
    """At T = 1 a LIF step is the stateless spike: one T-RevSNN column (no Up path, alpha * 0)
    and the BPTT network compute the same logits from the same weights."""
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    rev = revsnn.create_model("trevsnn_test", T=1).double().eval()
    bptt = TRevSNNBPTT(channels=(4, 8, 8, 8), T=1, stem="cifar", num_classes=10).double().eval()
    state = {}
    for k, v in rev.state_dict().items():
        if k.startswith("columns.alpha"):
            continue
        k = k.replace("columns.levels.0.", "levels.").replace("heads.0.", "head.")
        state[k] = v
    bptt.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(bptt(x), rev(x))


def test_bptt_trains_with_checkpoint_equal_to_none():
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    ref = step("none", x, y, T=3, name="trevsnn_cifar_bptt")
    res = step("checkpoint", x, y, T=3, name="trevsnn_cifar_bptt")
    for n, g in ref[3].items():
        assert rel(res[3][n], g) <= 1e-10, n
    assert len(ref[0].forward_heads(x.double())) == 1


def test_reversible_saved_memory_is_flat_in_T():

    def saved(T, mode):
        torch.manual_seed(0)
        m = revsnn.create_model("trevsnn_test", T=T, memory_mode=mode, tolerance=float("inf"))
        x = torch.randn(4, 3, 8, 8)
        exclude = [*m.parameters(), *m.buffers(), x]
        return saved_tensor_bytes(lambda: m(x).sum(), exclude=exclude)

    assert saved(2, "reversible") == saved(6, "reversible")
    assert saved(6, "none") > 2.5 * saved(2, "none")


def test_column_loss_keeps_only_logits_per_column():
    """The heads run inside the engine: with the loss over every head, reversible training keeps
    per extra column only what the loss itself saves (one [B, classes] tensor), no pooled state."""
    B, classes = 4, 10

    def saved(T):
        torch.manual_seed(0)
        m = revsnn.create_model("trevsnn_test", T=T, memory_mode="reversible",
                                tolerance=float("inf"))
        x, y = torch.randn(B, 3, 8, 8), torch.arange(B)
        exclude = [*m.parameters(), *m.buffers(), x]
        return saved_tensor_bytes(lambda: column_loss(m.forward_heads(x), y), exclude=exclude)

    growth = saved(6) - saved(2)
    assert 0 <= growth <= 4 * (B * classes * 4 + 32)


def test_reset_classifier_and_assigned_heads_reach_the_engine():
    m = revsnn.create_model("trevsnn_test", num_classes=10, T=3)
    m.reset_classifier(5)
    x = torch.randn(2, 3, 8, 8)
    heads = m.forward_heads(x)
    assert [h.shape for h in heads] == [(2, 5)] * 3
    column_loss(heads, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None for p in m.heads.parameters())
    assert not any(k.startswith("columns.readout") for k in m.state_dict())
    # a model edited after construction: the engine reads model.heads at every call
    m.heads = nn.ModuleList(nn.Sequential(nn.Flatten(1), nn.LazyLinear(7)) for _ in range(3))
    with torch.no_grad():
        assert [h.shape for h in m.forward_heads(x)] == [(2, 7)] * 3


def test_memory_summary_reports_the_policy():
    m = revsnn.create_model("trevsnn_test", T=4, store_every=2)
    column_loss(m.forward_heads(torch.randn(2, 3, 8, 8)), torch.tensor([0, 1])).backward()
    s = m.memory_summary()
    assert s["memory_mode"] == "reversible" and s["stored_columns"] == [2]
    assert s["stored_bytes_per_image"] > 0 and s["recompute_count"] == 16
    assert isinstance(m, TRevSNN)


def test_long_T_rebuilds_every_column_with_the_default_tolerance():
    """float64 states: T = 16 columns are all rebuilt (none stored) at the default tolerance,
    so the memory kept for backward is the same at T = 4 and T = 16."""

    def kept(T):
        torch.manual_seed(0)
        m = revsnn.create_model("trevsnn_test", T=T)
        x = torch.randn(4, 3, 8, 8)
        exclude = [*m.parameters(), *m.buffers(), x]
        n = saved_tensor_bytes(lambda: m(x).sum(), exclude=exclude)
        column_loss(m.forward_heads(x), torch.tensor([0, 1, 2, 3])).backward()
        return n, m.memory_summary()

    n4, _ = kept(4)
    n16, s16 = kept(16)
    assert s16["stored_columns"] == [] and s16["est_max_rel_error"] <= s16["tolerance"]
    assert n16 <= 1.05 * n4
