"""Surrogate spikes: exact 0/1 forward, backward = derivative of the primitive."""

import pytest
import torch

from revsnn.spiking import ATan, Rectangle, Sigmoid, get_surrogate


@pytest.mark.parametrize("surrogate", [ATan(2.0), Sigmoid(4.0), ATan(3.0), Sigmoid(1.5)])
def test_backward_matches_finite_difference_of_primitive(surrogate):
    x = torch.linspace(-2.0, 2.0, 101, dtype=torch.float64)
    x = x[x.abs() > 1e-6]  # stay off the kink of H itself (irrelevant for the surrogate)
    xr = x.clone().requires_grad_(True)
    surrogate(xr).sum().backward()
    h = 1e-6
    fd = (surrogate.primitive(x + h) - surrogate.primitive(x - h)) / (2 * h)
    torch.testing.assert_close(xr.grad, fd, rtol=1e-7, atol=1e-9)


def test_rectangle_is_straight_through():
    x = torch.tensor(
        [-0.8, -0.5, -0.1, 0.0, 0.3, 0.5, 0.6], dtype=torch.float64, requires_grad=True
    )
    Rectangle(1.0)(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # away from the edges the primitive's finite difference agrees
    inner = torch.tensor([-0.3, 0.1, 0.4], dtype=torch.float64)
    fd = (Rectangle().primitive(inner + 1e-6) - Rectangle().primitive(inner - 1e-6)) / 2e-6
    torch.testing.assert_close(fd, torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["atan", "sigmoid", "rectangle"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_is_exactly_binary(name, dtype):
    x = torch.randn(1000).to(dtype)
    s = get_surrogate(name)(x)
    assert s.dtype == dtype
    assert set(s.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(s, (x >= 0).to(dtype))


def test_unknown_surrogate_is_a_clear_error():
    with pytest.raises(ValueError, match="atan"):
        get_surrogate("tanhh")
