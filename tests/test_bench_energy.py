"""revsnn.bench.energy: MAC / AC counts of small layers with known spike patterns are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revsnn.bench.energy import E_AC_PJ, E_MAC_PJ, count_synops, dense_ops


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops on a shared 2-core machine: intra-op threads only add barrier waits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _spikes(shape, every: int) -> torch.Tensor:
    """A known pattern: every `every`-th element fires."""
    n = int(torch.tensor(shape).prod())
    return (torch.arange(n) % every == 0).float().view(shape)


def test_linear_on_spikes_counts_nnz_times_fan_out():
    fc = nn.Linear(10, 7)
    x = _spikes((4, 10), every=3)  # 14 spikes in 40 inputs
    rep = count_synops(fc, x)
    (row,) = rep.rows()
    assert row["spiking_input"] and row["calls"] == 1
    assert row["firing_rate"] == 14 / 40
    assert rep.acs == 14 * 7 / 4  # per image: each spike feeds 7 synapses
    assert rep.macs == 0
    assert rep.energy_mj == pytest.approx(E_AC_PJ * 14 * 7 / 4 * 1e-9, rel=1e-12)


def test_conv_on_spikes_is_rate_times_dense_ops_and_real_input_is_macs():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = _spikes((2, 4, 9, 9), every=4)  # nnz = 162 of 648
    out = conv(x)
    assert out.shape == (2, 6, 5, 5)
    dense = 2 * 6 * 5 * 5 * (4 // 2) * 3 * 3  # outputs x (C_in / groups) x k*k = 5400
    assert dense_ops(conv, out) == dense
    rep = count_synops(conv, x)
    assert rep.acs == dense * 162 / 648 / 2 == 675.0
    assert rep.layers[0].firing_rate == 162 / 648

    real = torch.randn(2, 4, 9, 9)
    rep = count_synops(conv, real)
    assert rep.macs == dense / 2 and rep.acs == 0
    assert rep.layers[0].firing_rate is None and rep.rows()[0]["firing_rate"] == ""
    assert rep.energy_mj == pytest.approx(E_MAC_PJ * dense / 2 * 1e-9, rel=1e-12)


class _Folded(nn.Module):
    """Input [T, B, C, H, W]; the conv runs on [T*B, C, H, W]; the linear loops over T."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1, bias=False)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = self.conv(x.flatten(0, 1))  # [T*B, 3, 4, 4]
        s = (y > 0).float().view(T, B, -1)  # [T, B, 48] spikes
        return torch.stack([self.fc(s[t]) for t in range(T)]).mean(0)


def test_folded_time_counts_per_image_not_per_T_times_B():
    T, B = 3, 2
    x = _spikes((T, B, 2, 4, 4), every=5)  # nnz = 39 of 192
    m = _Folded()
    rep = count_synops(m, x)  # 5-D input: batch inferred as x.shape[1]
    assert rep.batch_size == B
    conv = next(layer for layer in rep.layers if layer.name == "conv")
    assert conv.calls == 1 and conv.input_nonzeros == 39
    assert rep.rows()[0]["acs_per_image"] == 39 * 3 / B  # 1x1 conv: each spike feeds 3 outputs
    fc = next(layer for layer in rep.layers if layer.name == "fc")
    with torch.no_grad():
        s = (m.conv(x.flatten(0, 1)) > 0).float()
    assert fc.calls == T and fc.input_nonzeros == int(s.sum())
    assert fc.acs == int(s.sum()) * 5
    # an explicitly folded input needs the batch size: the same counts per image
    folded = count_synops(m.conv, x.flatten(0, 1), batch_size=B)
    assert folded.acs == rep.rows()[0]["acs_per_image"]


class _SpikingAttention(nn.Module):
    def forward(self, qk: torch.Tensor) -> torch.Tensor:
        q, k = qk.unbind(0)  # [B, N, D] each
        return q @ k.transpose(-2, -1)  # [B, N, N]


def test_matmul_outside_layers_is_counted_with_the_spiking_operand():
    q = _spikes((2, 5, 4), every=3)  # nnz 14 of 40
    k = torch.randn(2, 5, 4)
    rep = count_synops(_SpikingAttention(), torch.stack([q, k]), batch_size=2)
    (layer,) = rep.layers
    assert layer.name == "_SpikingAttention.matmul0" and layer.kind == "matmul"
    # dense = outputs (2*5*5) x inner dim 4 = 200; ACs = 200 * 14/40 = nnz(q) * N = 70
    assert layer.dense_ops == 200 and layer.acs == 70 and layer.macs == 0
    rep = count_synops(_SpikingAttention(), torch.stack([k, q]), batch_size=2)
    assert rep.layers[0].acs == 70  # the right operand is the binary one now
    rep = count_synops(_SpikingAttention(), torch.stack([k, k]), batch_size=2)
    assert rep.layers[0].macs == 200
    assert count_synops(_SpikingAttention(), torch.stack([q, k]), batch_size=2,
                        count_matmul=False).layers == []


def test_energy_constants_are_overridable_and_model_mode_is_restored():
    m = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    m.train()
    x = torch.randn(3, 6)
    rep = count_synops(m, x, e_mac_pj=1.0, e_ac_pj=0.0)
    # the second linear reads ReLU output: real-valued, MACs
    assert rep.macs == (6 * 4 + 4 * 2)
    assert rep.energy_mj == pytest.approx(32 * 1e-9)
    assert m.training
    with pytest.raises(ValueError, match="batch_size"):
        count_synops(m, x, batch_size=0)


def test_matches_spikingjelly_synop_counter_when_installed():
    op_counter = pytest.importorskip(
        "spikingjelly.activation_based.op_counter",
        reason="spikingjelly 2.0 not installed (pip install --no-deps spikingjelly loguru)",
    )
    if not hasattr(op_counter, "SynOpCounter") or not hasattr(op_counter, "DispatchCounterMode"):
        pytest.skip("this spikingjelly has no SynOpCounter / DispatchCounterMode")
    # 1x1 convs and linears: rate x dense ops equals the exact per-spike fan-out count
    m = nn.Sequential(nn.Conv2d(3, 5, 1, bias=False), nn.Flatten(), nn.Linear(5 * 4 * 4, 6))
    x = _spikes((2, 3, 4, 4), every=3)
    with torch.no_grad():
        h = m[0](x)
    spikes_h = (h > 0).float()
    # totals over the batch of 2 (count_synops reports per image)
    ours = 2 * (count_synops(m[0], x).acs + count_synops(m[2], spikes_h.flatten(1)).acs)
    counter = op_counter.SynOpCounter()
    with torch.no_grad(), op_counter.DispatchCounterMode([counter]):
        m[0](x)
        m[2](spikes_h.flatten(1))
    assert ours == pytest.approx(float(counter.get_total()), rel=1e-9)
