"""revsnn.bench.energy: MAC / AC counts of small layers with known spike patterns are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from revsnn.bench.energy import E_AC_PJ, E_MAC_PJ, SpikeInput, count_synops, dense_ops


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
    from revsnn.bench.peers import INSTALL_HINT

    op_counter = pytest.importorskip("spikingjelly.activation_based.op_counter",
                                     reason=f"SpikingJelly 2.0 not installed: {INSTALL_HINT}")
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


class _SpikeDwPw(nn.Module):
    """``spike -> depthwise 3x3 -> [mid] -> 1x1 conv`` (T-RevSNN's ``pw1(dw1(S(z)))``), with an
    optional first conv on the real input and something in between that may break the chain."""

    def __init__(self, mid: str = "none", first: bool = False) -> None:
        super().__init__()
        self.first = nn.Conv2d(4, 4, 1) if first else None
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.pw = nn.Conv2d(4, 8, 1)
        self.mid = mid
        with torch.no_grad():  # dw outputs 0.125 + 0.25 k: never 0 or 1, so never binary
            self.dw.weight.fill_(0.25)
            self.dw.bias.fill_(0.125)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first is not None:
            x = self.first(x)
        y = self.dw(x)
        if self.mid == "bn":
            y = self.bn(y)
        elif self.mid == "relu":
            y = torch.relu(y)
        elif self.mid == "relu_inplace":
            y.relu_()  # same object, changed in place
        elif self.mid == "add":
            y = y + y
        elif self.mid == "view":
            y = y.view(y.shape)  # a new tensor object
        return self.pw(y)


# x: [2, 4, 5, 5] spikes, every 4th fires: 50 of 200, rate 1/4
# dw: 200 outputs x 1 x 9 = 1800 dense ops -> ACs 450 (225 per image) in both conventions
# pw: 400 outputs x 4 = 1600 dense ops -> STRICT: MACs 800 per image; LINEAR_CHAIN: ACs at the
#     spike rate 1600 / 4 = 400 (200 per image)
_DW_ACS, _PW_OPS = 225.0, 800.0


def test_linear_chain_counts_pw_after_dw_as_acs_at_the_spike_rate():
    x = _spikes((2, 4, 5, 5), every=4)
    assert int(x.sum()) == 50
    m = _SpikeDwPw()
    strict = count_synops(m, x)
    assert strict.spike_input is SpikeInput.STRICT and strict.summary()["spike_input"] == "strict"
    assert strict.acs == _DW_ACS and strict.macs == _PW_OPS
    dw, pw = strict.rows()
    assert dw["spiking_input"] and not dw["chained"] and dw["firing_rate"] == 0.25
    assert not pw["spiking_input"] and not pw["chained"] and pw["firing_rate"] == ""
    assert pw["macs_per_image"] == _PW_OPS and pw["spike_input"] == "strict"
    assert [layer.ac_dense_ops for layer in strict.layers] == [1800, 0]

    for conv in ("linear_chain", SpikeInput.LINEAR_CHAIN, "LINEAR_CHAIN"):
        rep = count_synops(m, x, spike_input=conv)
        assert rep.spike_input is SpikeInput.LINEAR_CHAIN
        assert rep.summary()["spike_input"] == "linear_chain"
        assert rep.macs == 0 and rep.acs == _DW_ACS + _PW_OPS / 4 == 425.0
        dw, pw = rep.rows()
        assert dw["spiking_input"] and not dw["chained"]
        assert not pw["spiking_input"] and pw["chained"]  # not binary itself, chained to x
        assert pw["firing_rate"] == 0.25 and pw["acs_per_image"] == 200.0
        assert pw["macs_per_image"] == 0 and pw["spike_input"] == "linear_chain"
        assert rep.layers[1].chained_calls == 1 and rep.layers[1].binary_calls == 0
        assert [layer.ac_dense_ops for layer in rep.layers] == [1800, 1600]
        assert rep.energy_mj == pytest.approx(E_AC_PJ * 425 * 1e-9, rel=1e-12)
    assert strict.energy_mj == pytest.approx((E_AC_PJ * 225 + E_MAC_PJ * 800) * 1e-9, rel=1e-12)


def test_linear_chain_continues_through_several_layers_and_keeps_the_origin_rate():
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 8, 1),
                      nn.Conv2d(8, 2, 1))  # dw -> pw -> pw, all fed by the spikes, affinely
    x = _spikes((2, 4, 5, 5), every=4)  # rate 1/4
    rep = count_synops(m, x, spike_input="linear_chain")
    assert [r["chained"] for r in rep.rows()] == [False, True, True]
    assert [layer.firing_rate for layer in rep.layers] == [0.25, 0.25, 0.25]
    # dense ops 1800, 400 x 4 = 1600, 100 x 8 = 800 -> ACs / 4, per image / 2
    assert rep.macs == 0 and rep.acs == (1800 + 1600 + 800) / 4 / 2
    assert count_synops(m, x).macs == (1600 + 800) / 2  # STRICT: only the first is ACs


@pytest.mark.parametrize("mid", ["bn", "relu", "relu_inplace", "add", "view"])
def test_anything_between_the_layers_breaks_the_chain(mid):
    x = _spikes((2, 4, 5, 5), every=4)
    for conv in SpikeInput:
        rep = count_synops(_SpikeDwPw(mid), x, spike_input=conv)
        assert rep.acs == _DW_ACS and rep.macs == _PW_OPS, (mid, conv)
        assert not rep.rows()[1]["chained"]


def test_first_layer_on_real_input_is_macs_in_both_conventions():
    torch.manual_seed(0)
    m = _SpikeDwPw(first=True)
    real = torch.randn(2, 4, 5, 5)
    # first: 200 outputs x 4 = 800 dense ops; its real output starts no chain: dw and pw MACs
    for conv in ("strict", "linear_chain"):
        rep = count_synops(m, real, spike_input=conv)
        assert rep.acs == 0 and rep.macs == (800 + 1800 + 1600) / 2
        assert not any(r["chained"] or r["spiking_input"] for r in rep.rows())


def test_linear_chain_ignores_a_different_tensor_under_a_reused_id():
    from revsnn.bench.energy import _Chains

    a, b = torch.zeros(3), torch.ones(3)
    chains = _Chains()
    chains.add(a, (1, 4))
    assert chains.get(a) == (1, 4)
    ref, version, spikes = chains.outputs.pop(id(a))
    chains.outputs[id(b)] = (ref, version, spikes)  # as if b had been allocated at a's id
    assert chains.get(b) is None and id(b) not in chains.outputs


def test_unknown_spike_input_convention_is_a_clear_error():
    with pytest.raises(ValueError, match="spike_input.*'strict', 'linear_chain'"):
        count_synops(nn.Linear(2, 2), torch.ones(1, 2), spike_input="sop")
    assert SpikeInput.parse("strict") is SpikeInput.STRICT
