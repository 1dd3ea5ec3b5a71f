"""revsnn.bench setups, data and peers: memory modes, the training objective, images normalised
as in training, the firing-rate definition, and SpikingJelly side by side when installed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revsnn.bench.data import digits_images, random_batches
from revsnn.bench.energy import count_synops
from revsnn.bench.peers import (
    INSTALL_HINT,
    PeerUnavailable,
    create_peer,
    list_peers,
    peer_unavailable_reason,
)
from revsnn.bench.setups import (
    create,
    family,
    in_modes,
    objective,
    stored_columns,
    supported_modes,
)
from revsnn.reversible.mode import MemoryMode


def test_supported_modes_are_the_declared_ones():
    rev = create("revs_resnet_test", memory_mode="checkpoint")
    assert supported_modes(rev) == list(MemoryMode)
    assert rev.memory_mode is MemoryMode.CHECKPOINT
    assert supported_modes(create("ms_resnet_test")) == [MemoryMode.NONE, MemoryMode.CHECKPOINT]
    assert supported_modes(create("trevsnn_cifar_bptt")) == [MemoryMode.NONE,
                                                             MemoryMode.CHECKPOINT]
    assert supported_modes(nn.Linear(2, 2)) == [MemoryMode.NONE]


def test_every_registered_model_has_a_family_and_stored_columns_come_from_the_engine():
    import revsnn

    assert all(family(name) for name in revsnn.list_models() if not name.startswith("bench_"))
    assert family("trevsnn_tiny_bptt") == "TRevSNNBPTT" and family("pararevsnn_resnet37") == (
        "ParaRevSNN") and family("spikingjelly:ms_resnet34") == "spikingjelly"
    assert stored_columns(create("ms_resnet_test")) is None
    m = create("trevsnn_test", T=3)
    module, loss_fn = objective(m)
    x, y = random_batches(3, 8, 10)(2)
    loss_fn(module(x), y).backward()
    assert stored_columns(m) == "none"  # float64 states: nothing stored at T = 3


def test_in_modes_copies_the_same_weights_into_each_mode():
    m = create("revs_resnet_test", seed=3)
    copies = in_modes(m, ["none", "reversible"])
    assert [c.memory_mode.value for c in copies.values()] == ["none", "reversible"]
    for c in copies.values():
        assert all(torch.equal(a, b) for a, b in zip(c.parameters(), m.parameters()))
    with pytest.raises(ValueError, match="reversible"):
        in_modes(create("ms_resnet_test"), ["reversible"])


def test_objective_is_the_training_loss_over_every_head():
    from revsnn.models.objective import column_loss

    m = create("trevsnn_test", T=3)
    module, loss_fn = objective(m)
    x, y = random_batches(3, 8, 10)(2)
    heads = module(x)
    assert len(heads) == 3  # one head per column
    assert torch.equal(loss_fn(heads, y), column_loss(heads, y, label_smoothing=0.1))


def test_digits_images_are_normalised_exactly_as_training_normalises_them():
    from revsnn.train.build import build_data
    from revsnn.train.config import TrainConfig

    bundle = build_data(TrainConfig())
    x, y = digits_images(16)
    want = bundle.augment(bundle.test.images[:16], None, train=False)
    assert torch.equal(x, want) and torch.equal(y, bundle.test.labels[:16])
    # resizing commutes with the normalisation (bilinear weights sum to one)
    big, _ = digits_images(4, size=32, channels=3)
    assert big.shape == (4, 3, 32, 32)
    plain = nn.functional.interpolate(bundle.test.images[:4], size=(32, 32), mode="bilinear",
                                      align_corners=False)
    mean, std = bundle.info.mean[0], bundle.info.std[0]
    assert torch.allclose(big[:, 0], ((plain - mean) / std)[:, 0], atol=1e-5)


def test_mean_firing_rate_is_size_weighted_over_binary_inputs_only():
    m = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        m[0].weight.copy_(torch.eye(4) * 0.5)  # real-valued output: never binary
    x = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0]])  # 4 ones in 8: rate 0.5
    for rule in ("strict", "linear_chain"):  # the chained second layer is not counted again
        assert count_synops(m, x, spike_input=rule).mean_firing_rate == 0.5
    small, large = torch.ones(1, 2), torch.zeros(1, 6)  # two binary layers of different sizes

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 1), nn.Linear(6, 1)

        def forward(self, _):
            return self.a(small) + self.b(large)

    assert count_synops(Two(), torch.zeros(1, 1)).mean_firing_rate == 2 / 8  # not (1 + 0) / 2
    assert count_synops(nn.Linear(2, 2), torch.randn(3, 2)).mean_firing_rate is None


def test_a_missing_peer_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_spikingjelly(name, *args, **kwargs):
        if name.startswith("spikingjelly"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_spikingjelly)
    with pytest.raises(PeerUnavailable, match="--no-deps"):
        create_peer("spikingjelly:ms_resnet34")
    assert INSTALL_HINT in peer_unavailable_reason("spikingjelly:ms_resnet34")
    with pytest.raises(ValueError, match="unknown peer"):
        create_peer("spikingjelly:nothing")


def _require_spikingjelly():
    reason = peer_unavailable_reason("spikingjelly:ms_resnet34")
    if reason:
        pytest.skip(reason)


def test_spikingjelly_ms_resnet34_matches_our_parameter_count_and_memopt_is_exact():
    _require_spikingjelly()
    ours = sum(p.numel() for p in create("ms_resnet34").parameters())
    plain = create("spikingjelly:ms_resnet34", seed=0)
    opt = create("spikingjelly:ms_resnet34+memopt1", seed=0)
    assert sum(p.numel() for p in plain.parameters()) == ours == 21_282_122
    x, y = random_batches(3, 8, 10)(2)
    grads = []
    for m in (plain, opt):
        logits = m(x)
        nn.functional.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in m.parameters()]))
        assert torch.equal(m(x), logits.detach())  # state is reset between calls
    (la, ga), (lb, gb) = grads
    assert torch.equal(la, lb)  # the same weights: checkpointing changes no value
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(ga, gb))


def test_memopt_levels_that_search_on_cuda_say_so_off_cuda():
    _require_spikingjelly()
    name = "spikingjelly:ms_resnet34+memopt4"
    assert name in list_peers()
    reason = peer_unavailable_reason(name, "cpu")
    assert "CUDA" in reason and "level 4" in reason
    assert peer_unavailable_reason("spikingjelly:ms_resnet34+memopt1", "cpu") == ""
    with pytest.raises(PeerUnavailable, match="needs a CUDA device"):
        create_peer(name, image_size=8)
