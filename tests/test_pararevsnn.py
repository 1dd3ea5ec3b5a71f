"""ParaRevSNN-ResNet: modes against the plain-autograd oracle, inverse, counters, counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import revsnn
from revsnn.models.blocks import ConvBranch, neuron_factory
from revsnn.models.pararev_blocks import BranchPair, MergedBlock
from revsnn.models.pararevsnn import BLOCKS, ParaRevSNN
from revsnn.models.revsresnet import RevSResNet
from revsnn.reversible import ReversibleSequence
from revsnn.reversible.check import CallCounter, reconstruction_error
from revsnn.spiking import IF, LIF
from revsnn_model_helpers import assert_modes_agree


def _tiny(merge: str = "fused", event: bool = False, **kw) -> ParaRevSNN:
    if event:  # event stem, PLIF, frames; n = (1, 2): one unpaired stage, one merged
        kw = dict(blocks=(1, 2), widths=(4, 6), stem="event", neuron="plif", in_channels=2,
                  T=3, **kw)
    else:  # n = (2, 3): even and odd block counts
        kw = dict(blocks=(2, 3), widths=(4, 8), T=2, **kw)
    return ParaRevSNN(merge=merge, num_classes=5, **kw)


def _input(event: bool, dtype: torch.dtype, seed: int = 0, B: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (3, B, 2, 16, 16) if event else (B, 3, 8, 8)
    return torch.randn(*shape, generator=g, dtype=dtype) * 2.0


def _step(model: nn.Module, mode: str, x: torch.Tensor, lr: float = 0.0) -> dict:
    """One training step of a copy of ``model`` in ``mode``: loss, grads, buffers, weights."""
    m = copy.deepcopy(model).train()
    m.set_memory_mode(mode)
    xr = x.clone().requires_grad_(True)
    out = m(xr)
    target = torch.arange(out.shape[0]) % out.shape[1]
    loss = nn.functional.cross_entropy(out, target) + 0.1 * out.pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    if lr:
        torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9).step()
    return dict(out=out.detach(), loss=loss.detach(), dx=xr.grad, grads=grads,
                state={k: v.clone() for k, v in m.state_dict().items()}, module=m)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("merge,event", [("fused", False), ("pair", False), ("fused", True)])
def test_modes_equal_oracle_float64(merge, event):
    torch.manual_seed(1)
    model = _tiny(merge, event).double()
    x = _input(event, torch.float64)
    ref = _step(model, "none", x)
    assert ref["dx"].abs().sum() > 0
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(ref["grads"]) == n_params  # every parameter (PLIF tau included) gets a gradient
    for mode in ("checkpoint", "reversible"):
        got = _step(model, mode, x)
        assert _rel(got["out"], ref["out"]) <= 1e-12, mode
        assert _rel(got["dx"], ref["dx"]) <= 1e-10, mode
        assert got["grads"].keys() == ref["grads"].keys()
        for n, g in ref["grads"].items():
            assert _rel(got["grads"][n], g) <= 1e-10, (mode, n)


@pytest.mark.parametrize("merge", ["fused", "pair"])
def test_one_sgd_step_gives_equal_weights_and_bn_buffers(merge):
    torch.manual_seed(2)
    model = _tiny(merge).double()
    x = _input(False, torch.float64, seed=2)
    ref = _step(model, "none", x, lr=0.1)
    bn_keys = [k for k in ref["state"] if "running_" in k or "num_batches" in k]
    assert bn_keys
    for k in bn_keys:  # the step really moved the BN statistics
        if "running_mean" in k:
            assert not torch.equal(ref["state"][k], model.state_dict()[k]), k
    for mode in ("checkpoint", "reversible"):
        got = _step(model, mode, x, lr=0.1)
        assert got["state"].keys() == ref["state"].keys()
        for k, v in ref["state"].items():
            assert torch.allclose(got["state"][k].double(), v.double(), rtol=0, atol=1e-12), k
        for k in bn_keys:
            if "num_batches" in k:  # BN statistics updated exactly once, not on recompute
                assert int(got["state"][k]) == 1, k


def _spike_flips(model: nn.Module, x: torch.Tensor):
    """Reversible forward + backward recording neurons' spikes: (flips, total spikes)."""
    records = {}

    def hook(name):
        def fn(_m, _i, out):
            records.setdefault(name, []).append(out.detach().clone())

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (IF, LIF))]
    model(x.clone().requires_grad_(True)).sum().backward()
    for h in handles:
        h.remove()
    pairs = [v for v in records.values() if len(v) == 2]  # recomputed neurons only
    flips = sum(int((v[0] != v[1]).sum()) for v in pairs)
    total = sum(int(v[0].sum()) for v in pairs)
    return flips, total


def test_float32_reversible_error_is_bounded():
    torch.manual_seed(3)
    model = _tiny("fused")
    x = _input(False, torch.float32, seed=3)
    ref = _step(model, "none", x)
    got = _step(model, "reversible", x)
    m = copy.deepcopy(model)
    m.set_memory_mode("reversible")
    flips, total = _spike_flips(m, x)
    err_dx = _rel(got["dx"], ref["dx"])
    err_w = max(_rel(got["grads"][n], g) for n, g in ref["grads"].items())
    print(f"\nfloat32 pararevsnn_test: spikes {total}, flipped in recompute {flips}, "
          f"rel err dx {err_dx:.2e}, param grads {err_w:.2e}")
    assert torch.equal(got["out"], ref["out"])  # the forward is the same computation
    assert total > 100
    assert flips <= 1e-3 * total
    if flips == 0:
        assert err_dx <= 1e-4 and err_w <= 1e-4


@pytest.mark.parametrize("merge", ["fused", "pair"])
def test_each_stage_is_exactly_invertible(merge):
    torch.manual_seed(4)
    model = _tiny(merge).double().eval()
    x = _input(False, torch.float64, seed=4)
    feats = []
    hooks = [s.register_forward_hook(lambda _m, i, _o: feats.append(i[0])) for s in model.stages]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    model.train()
    for seq, z in zip(model.stages, feats):
        assert reconstruction_error(seq, z) < 1e-13
        with torch.no_grad():
            y = seq(z)
            assert (seq.inverse(y) - z).abs().max() / z.abs().max() < 1e-13
        assert not torch.equal(y, z)
        assert reconstruction_error(seq.float(), z.float()) < 1e-5


def test_merged_module_runs_once_per_forward_and_once_per_backward():
    torch.manual_seed(5)
    model = _tiny("fused")
    x = _input(False, torch.float32, seed=5)
    mods = {}
    for s, seq in enumerate(model.stages):
        mods.update({f"s{s}.M{k}": m for k, m in enumerate(seq.merged)})
        mods[f"s{s}.F0"], mods[f"s{s}.Glast"] = seq.blocks[0].f, seq.blocks[-1].g
        # the wide second convolution produces G and F' together: one call per evaluation
        mods.update({f"s{s}.conv2_{k}": m.conv2[0] for k, m in enumerate(seq.merged)})
    expected = {"none": 1, "checkpoint": 2, "reversible": 2}
    for mode, count in expected.items():
        model.set_memory_mode(mode)
        for seq in model.stages:
            seq.recompute_count = 0
        with CallCounter(mods) as calls:
            y = model(x.clone().requires_grad_(True))
            assert dict(calls) == {n: 1 for n in mods}, mode
            y.sum().backward()
        assert dict(calls) == {n: count for n in mods}, mode
        if mode == "reversible":  # n + 1 stages recomputed per sequence: F_0, M_0.., G_{n-1}
            assert [seq.recompute_count for seq in model.stages] == [n + 1 for n in model.blocks]


def test_sequence_layout_unpaired_branches_and_odd_counts():
    model = ParaRevSNN(blocks=(1, 2, 3), widths=(4, 4, 8), T=1, merge="fused")
    one, two, three = model.stages
    assert one.merged is None and one.blocks[0].f is not None and one.blocks[0].g is not None
    for seq, n in ((two, 2), (three, 3)):
        assert len(seq.merged) == n - 1 and all(isinstance(m, MergedBlock) for m in seq.merged)
        assert isinstance(seq.blocks[0].f, ConvBranch) and isinstance(seq.blocks[-1].g, ConvBranch)
        assert all(b.g is None for b in seq.blocks[:-1])
        assert all(b.f is None for b in seq.blocks[1:])
    assert model.depth == 1 + 4 * 6 + 2 + 1
    assert three.merged[0].groups == 8 and two.merged[0].groups == 4


def test_merged_block_matches_its_equation():
    torch.manual_seed(6)
    c = 6
    m = MergedBlock(c, neuron_factory("if"), gn_groups=4).double()
    u = torch.randn(3, 2, c, 5, 5, dtype=torch.float64) * 2
    g, f = m(u)
    s1 = IF()(u).flatten(0, 1)  # [T*B, C, H, W]
    h = nn.functional.group_norm(
        nn.functional.conv2d(s1, m.conv1.weight, padding=1), 2, m.gn.weight, m.gn.bias
    )
    s2 = IF()(h.unflatten(0, (3, 2))).flatten(0, 1)
    z = m.conv2(s2).unflatten(0, (3, 2))  # conv -> BN on 2C channels
    assert m.groups == 2 and z.shape[2] == 2 * c
    assert torch.equal(g, z[:, :, :c]) and torch.equal(f, z[:, :, c:])
    with pytest.raises(ValueError, match=r"\[T, B, 6, H, W\]"):
        m(torch.randn(2, 2, 5, 5, 5, dtype=torch.float64))


def test_branch_pair_streams_option_is_exact_on_cpu():
    torch.manual_seed(7)
    nf = neuron_factory("if")
    pair = BranchPair(ConvBranch(3, nf), ConvBranch(3, nf), streams=True).double()
    plain = copy.deepcopy(pair)
    plain.streams = False
    u = torch.randn(2, 2, 3, 4, 4, dtype=torch.float64) * 2
    got, ref = pair(u), plain(u)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert torch.equal(got[0], pair.g(u)) and torch.equal(got[1], pair.f(u))
    model = _tiny("pair", streams=True)
    assert all(m.streams for seq in model.stages for m in seq.merged)


def test_pair_merge_has_revsresnets_parameter_shapes():
    para = ParaRevSNN(blocks=(1, 2, 3), widths=(4, 4, 8), merge="pair")
    rev = RevSResNet(blocks=(1, 2, 3), widths=(4, 4, 8))
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())  # noqa: E731
    assert shapes(para) == shapes(rev)


def _count(name: str, **kw) -> int:
    with torch.device("meta"):  # build without allocating or initialising real weights
        m = revsnn.create_model(name, **kw)
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts():
    # Depth 21 has no pair: the same network size as RevSResNet21 (SYSTEMS.md: 11.05M).
    assert _count("pararevsnn_resnet21", num_classes=100) == 11_048_420
    assert _count("pararevsnn_resnet21", num_classes=10) == 10_967_690
    assert _count("pararevsnn_resnet21", num_classes=100, merge="pair") == 11_048_420
    # merge="pair" is parameter-for-parameter RevSResNet at the same block counts.
    assert _count("pararevsnn_resnet37", num_classes=100, merge="pair") == 23_590_884
    # The fused block shares the first conv of G_k and F_{k+1}: 9 w^2 + 2 w fewer per pair.
    saved = sum((n - 1) * (9 * w * w + 2 * w) for n, w in zip(BLOCKS[37], (64, 128, 256, 448)))
    assert _count("pararevsnn_resnet37", num_classes=100) == 23_590_884 - saved == 20_455_268
    # The registered ResNets fuse from the second stage on (fuse_from=1): the first stage's
    # n_1 - 1 pairs keep RevSResNet's two branches (9 w^2 + 2 w more each at w = 64).
    first = 9 * 64 * 64 + 2 * 64
    assert _count("pararevsnn_resnet69", num_classes=100, fuse_from=0) == 30_307_556
    assert _count("pararevsnn_resnet69", num_classes=100) == 30_307_556 + first
    assert _count("pararevsnn_resnet117", num_classes=100) == 48_903_908 + first
    assert _count("pararevsnn_resnet165", num_classes=100) == 69_490_916 + 2 * first
    assert _count("pararevsnn_resnet24", num_classes=10) == 230_269
    for depth in BLOCKS:
        with torch.device("meta"):
            m = revsnn.create_model(f"pararevsnn_resnet{depth}")
        assert m.depth == depth == 5 + 4 * sum(BLOCKS[depth])


def test_registered_models_shapes_and_errors():
    names = {f"pararevsnn_resnet{d}" for d in (21, 24, 37, 69, 117, 165)} | {"pararevsnn_test"}
    assert names <= set(revsnn.list_models("pararevsnn*"))
    m = revsnn.create_model("pararevsnn_test", num_classes=7, T=2, memory_mode="none")
    assert m.memory_mode.value == "none"
    assert all(s.memory_mode.value == "none" for s in m.stages)
    x = torch.randn(2, 3, 8, 8)
    assert m(x).shape == (2, 7)
    assert m(x.unsqueeze(0).expand(2, *x.shape)).shape == (2, 7)  # frames [T, B, C, H, W]
    with pytest.raises(ValueError, match="3 input channels"):
        m(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match="T=2"):
        m(torch.randn(3, 2, 3, 8, 8))
    with pytest.raises(ValueError, match="merge"):
        ParaRevSNN(merge="both")
    with pytest.raises(ValueError, match="neuron"):
        ParaRevSNN(neuron="relu")
    m.reset_classifier(3)
    assert m(x).shape == (2, 3) and m.get_classifier().out_features == 3
    ev = revsnn.create_model("pararevsnn_resnet24", num_classes=11, T=2, in_channels=2)
    assert ev(torch.rand(2, 1, 2, 32, 32)).shape == (1, 11)
    assert isinstance(ev.stages[1], ReversibleSequence) and len(ev.stages[1].merged) == 1


def test_state_dict_keys_do_not_depend_on_mode():
    m = _tiny("fused")
    keys = []
    for mode in ("none", "checkpoint", "reversible"):
        m.set_memory_mode(mode)
        keys.append(list(m.state_dict()))
    assert keys[0] == keys[1] == keys[2]


def test_stages_before_fuse_from_run_one_branch_per_stage():
    """fuse_from=1: the first stage evaluates G_k and F_{k+1} one after the other (2n stages,
    RevSResNet's parameters), later stages fuse; all modes agree with the oracle."""
    torch.manual_seed(2)
    m = ParaRevSNN(blocks=(2, 3), widths=(4, 8), T=2, fuse_from=1, memory_mode="none").double()
    assert m.stages[0].merged is None and not m.stages[0].pair_stages
    assert m.stages[1].merged is not None
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    out = assert_modes_agree(m, x, ["checkpoint", "reversible"], tol=1e-10)
    rev = out["reversible"]["model"]
    assert [s.recompute_count for s in rev.stages] == [2 * 2, 3 + 1]
    with pytest.raises(ValueError, match="fuse_from"):
        ParaRevSNN(blocks=(1,), widths=(4,), fuse_from=-1)
