"""Multi-step neurons equal loops of functional steps and keep no state between calls."""

import pytest
import torch

from revsnn.spiking import IF, LIF, PLIF, StatelessSpike, if_step, lif_step, stateless_spike


def _loop(step, x, **kw):
    v = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        s, v = step(v, x[t], **kw)
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("v_reset", [0.0, None, -0.2])
@pytest.mark.parametrize("detach_reset", [True, False])
def test_if_equals_loop_of_steps(v_reset, detach_reset):
    torch.manual_seed(0)
    x = torch.randn(6, 3, 5, dtype=torch.float64) * 1.5
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    n = IF(v_threshold=0.7, v_reset=v_reset, detach_reset=detach_reset)
    a = n(xa)
    init = 0.0 if v_reset is None else v_reset
    v = torch.full_like(x[0], init)
    out = []
    for t in range(x.shape[0]):
        s, v = if_step(v, xb[t], 0.7, v_reset, "atan", detach_reset)
        out.append(s)
    b = torch.stack(out)
    assert torch.equal(a, b)
    w = torch.randn_like(x)
    (a * w).sum().backward()
    (b * w).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    assert a.sum() > 0  # some spikes, so the comparison is meaningful


@pytest.mark.parametrize("decay_input", [True, False])
def test_lif_equals_loop_of_steps(decay_input):
    torch.manual_seed(1)
    x = torch.randn(5, 4, 3, dtype=torch.float64) * 2
    a = LIF(tau=1.5, decay_input=decay_input)(x)
    b = _loop(lif_step, x, tau=1.5, decay_input=decay_input)
    assert torch.equal(a, b) and a.sum() > 0


def test_lif_charge_by_hand():
    # tau = 2, decay_input: H = V + (X - V) / 2; threshold 1, hard reset to 0
    x = torch.tensor([[1.0], [1.0], [1.0], [3.0]])
    s = LIF(tau=2.0)(x)
    # V: 0.5 -> 0.75 -> 0.875 -> 0.875 + (3 - 0.875)/2 = 1.9375 (spike)
    assert s.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]


def test_plif_tau_is_learnable_and_matches_lif_at_init():
    torch.manual_seed(2)
    x = torch.randn(4, 2, 3) * 2
    p = PLIF(tau_init=2.0)
    assert torch.equal(p(x), LIF(tau=2.0)(x))
    p(x).sum().backward()
    assert p.w.grad is not None and p.w.grad.abs() > 0


@pytest.mark.parametrize("neuron", [IF(), LIF(), PLIF()])
def test_no_hidden_state_between_calls(neuron):
    torch.manual_seed(3)
    x = torch.rand(4, 2, 8) * 2
    assert torch.equal(neuron(x), neuron(x))
    assert not any(t.dim() > 0 for t in neuron.buffers())


def test_stateless_spike_rule_and_gradient():
    z = torch.tensor([-0.5, 0.0, 0.49, 0.5, 0.99, 1.0, 1.5], requires_grad=True)
    s = stateless_spike(z)
    assert s.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    # floor(clamp(z, 0, 1) + 0.5) is the same rule
    assert torch.equal(s, torch.floor(torch.clamp(z.detach(), 0, 1) + 0.5))
    s.sum().backward()
    assert z.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    m = StatelessSpike()
    assert torch.equal(m.train()(z), m.eval()(z))


@pytest.mark.parametrize("bad", [torch.tensor(1.0), torch.zeros(3)])
def test_neuron_rejects_non_sequences(bad):
    with pytest.raises(ValueError, match=r"\[T, B"):
        IF()(bad)
