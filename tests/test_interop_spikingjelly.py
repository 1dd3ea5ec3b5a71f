"""SpikingJelly 2.0 neurons and layers inside revsnn's engines: every memory mode equals plain
autograd (float64), reset by the engine's state protocol."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

sj = pytest.importorskip(
    "spikingjelly.activation_based",
    reason="SpikingJelly 2.0 not installed (pip install spikingjelly==2.0.0 --no-deps loguru)",
)
from spikingjelly.activation_based import layer, neuron  # noqa: E402

from revsnn.interop.spikingjelly import multi_step, single_step  # noqa: E402
from revsnn.reversible import (  # noqa: E402
    ParaRevCoupling,
    RevCoupling,
    ReversibleSequence,
    TemporalColumns,
)

SAVING = ("checkpoint", "reversible")


def branch(c: int) -> nn.Module:
    """LIF -> conv -> BN -> dropout -> IF -> conv, all SpikingJelly multi-step modules."""
    return multi_step(nn.Sequential(
        neuron.LIFNode(tau=2.0, v_threshold=0.5), layer.Conv2d(c, c, 3, padding=1, bias=False),
        layer.BatchNorm2d(c), layer.Dropout(0.2), neuron.IFNode(v_threshold=0.5),
        layer.Conv2d(c, c, 3, padding=1),
    ))


def run(module: nn.Module, mode: str, x: torch.Tensor, readout=None):
    m, r = copy.deepcopy((module, readout))  # fresh copies of the pristine modules
    m.memory_mode = mode
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(3)
    out = m(xr) if r is None else m(xr, readout=r)
    outs = out if isinstance(out, list) else [out]
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
               for o in outs)
    loss.backward()
    named = list(m.named_parameters()) + ([] if r is None else [
        ("readout." + n, p) for n, p in r.named_parameters()])
    return dict(y=[o.detach() for o in outs], dx=xr.grad,
                grads={n: p.grad for n, p in named if p.grad is not None},
                bufs={n: b.clone() for n, b in m.named_buffers()})


def assert_equal_to_none(module, x, readout=None):
    ref = run(module, "none", x, readout)
    assert ref["dx"].abs().max() > 0
    scale = max(float(g.abs().max()) for g in ref["grads"].values())
    for mode in SAVING:
        got = run(module, mode, x, readout)
        for a, b in zip(got["y"], ref["y"]):
            assert torch.equal(a, b), mode
        assert float((got["dx"] - ref["dx"]).abs().max()) <= 1e-10 * float(ref["dx"].abs().max())
        assert got["grads"].keys() == ref["grads"].keys()
        for n, g in ref["grads"].items():
            assert float((got["grads"][n] - g).abs().max()) <= 1e-10 * scale, (mode, n)
        for n, b in ref["bufs"].items():
            assert torch.equal(got["bufs"][n], b), (mode, n)


@pytest.mark.parametrize("coupling", [RevCoupling, ParaRevCoupling])
def test_spikingjelly_branches_in_a_reversible_sequence(coupling):
    torch.manual_seed(0)
    seq = ReversibleSequence([coupling(branch(3), branch(3)) for _ in range(3)]).double()
    x = torch.randn(4, 2, 6, 5, 5, dtype=torch.float64)
    assert_equal_to_none(seq, x)


class Level(nn.Module):
    """A one-step column level from SpikingJelly single-step modules."""

    def __init__(self, cin: int, c: int, cup: int) -> None:
        super().__init__()
        self.lower = single_step(nn.Sequential(
            neuron.IFNode(v_threshold=0.5), layer.Conv2d(cin, c, 3, padding=1, bias=False),
            layer.BatchNorm2d(c)))
        self.up = single_step(nn.Sequential(neuron.LIFNode(), layer.Conv2d(cup, c, 1)))

    def forward(self, lower, upper=None):
        z = self.lower(lower)
        return z if upper is None else z + self.up(upper)


def test_spikingjelly_levels_and_readout_in_temporal_columns():
    torch.manual_seed(0)
    C, T = (3, 4), 3
    levels = [[Level(2, C[0], C[1]), Level(C[0], C[1], C[1])] for _ in range(T)]
    engine = TemporalColumns(levels, C).double()
    readout = nn.ModuleList(single_step(nn.Sequential(
        neuron.LIFNode(), nn.Flatten(1), layer.Linear(C[1] * 36, 5))) for _ in range(T)).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    assert_equal_to_none(engine, x, readout)


def test_multi_step_needs_a_spikingjelly_module():
    with pytest.raises(ValueError, match="no SpikingJelly module"):
        multi_step(nn.Conv2d(1, 1, 1))


class SJNet(nn.Module):
    """A model with a SpikingJelly-built reversible block, for revsnn's trainer: stem conv
    (repeated over T) -> 2 reversible couplings of SpikingJelly branches -> pooled head."""

    def __init__(self, num_classes: int = 10, T: int = 2, in_channels: int = 1, c: int = 4):
        super().__init__()
        self.num_classes, self.T = num_classes, T
        self.stem = nn.Conv2d(in_channels, 2 * c, 3, padding=1)
        self.blocks = ReversibleSequence([RevCoupling(branch(c), branch(c)) for _ in range(2)])
        self.fc = nn.Linear(2 * c, num_classes)

    def set_memory_mode(self, mode):
        self.blocks.memory_mode = mode
        return self

    def forward(self, x):
        s = self.stem(x).unsqueeze(0).expand(self.T, -1, -1, -1, -1)  # [T, B, 2c, H, W]
        return self.fc(self.blocks(s).mean(dim=(0, 3, 4)))


def test_a_spikingjelly_block_trains_one_epoch_through_revsnn(tmp_path):
    from torch.utils.data import Subset, TensorDataset

    from revsnn.data import load_dataset
    from revsnn.train import fit

    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    train = Subset(TensorDataset(tr.images, tr.labels), range(256))
    test = Subset(TensorDataset(te.images, te.labels), range(64))
    summaries, weights = {}, {}
    for mode in ("none", "reversible"):
        torch.manual_seed(0)
        model = SJNet()
        summaries[mode] = fit(model, train, test, epochs=1, batch_size=64, lr=3e-3, T=2,
                              optimizer="adamw", warmup_epochs=0, progress=False,
                              measure_memory=False, memory_mode=mode,
                              out=str(tmp_path / mode), log=lambda s: None)
        weights[mode] = model.state_dict()
    assert summaries["reversible"]["status"] == "finished"
    assert summaries["reversible"]["global_step"] == 4
    moved = 0.0
    torch.manual_seed(0)
    start = SJNet().state_dict()
    for k, v in weights["none"].items():  # the same training in both modes (float32 rounding)
        torch.testing.assert_close(weights["reversible"][k], v, rtol=1e-3, atol=1e-4, msg=k)
        moved = max(moved, float((v - start[k]).abs().max()))
    assert moved > 1e-3
