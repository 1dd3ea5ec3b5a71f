"""revsnn.bench.memory: the tracker and per-image training memory are exact on known patterns."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from revsnn.bench.memory import measure_training_step
from revsnn.measure import MIB, AllocationTracker, saved_tensor_bytes, tensor_bytes


def test_tracker_counts_a_known_allocation_pattern_exactly():
    before = torch.empty(4096)  # exists before: neither its creation nor its release counts
    with AllocationTracker() as tr:
        a = torch.empty(1000)  # 4000 B
        b = torch.zeros(250, dtype=torch.float64)  # 2000 B
        assert (tr.current, tr.peak) == (6000, 6000)
        v = a[10:].view(-1)  # a view shares a's storage: no new bytes
        assert tr.current == 6000
        del a
        assert tr.current == 6000  # the view keeps the storage alive
        del v
        assert (tr.current, tr.peak) == (2000, 6000)
        before.add_(1)  # in place on an old storage: nothing new
        del before
        assert tr.current == 2000
        c = b + 1  # new 2000 B
        b.mul_(2)
        assert (tr.current, tr.peak) == (4000, 6000)
        tr.reset_peak()
        assert tr.peak == 4000
        c.resize_(1000)  # 250 -> 1000 float64 elements: storage grows to 8000 B
        assert (tr.current, tr.peak) == (10000, 10000)
        del b, c
        assert tr.current == 0
    assert tr.allocations == 3
    assert tr.peak_mib == pytest.approx(10000 / MIB)


def test_tracker_sees_backward_allocations():
    w = torch.ones(256, requires_grad=True)
    x = torch.randn(8, 256)
    with AllocationTracker() as tr:
        loss = (x * w).sum()
        tr.reset_peak()
        base = tr.current  # the loss scalar
        loss.backward()
    # grad of the product w.r.t. w before reduction: [8, 256] float32 is the largest live buffer
    assert tr.peak - base >= 8 * 256 * 4
    assert w.grad is not None


class _SaveOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = x * 2
        ctx.save_for_backward(y, y[1:])  # a view of y: one storage
        return y

    @staticmethod
    def backward(ctx, g):
        return g * 2


def test_saved_tensor_bytes_dedupes_storages_and_sees_custom_functions():
    x = torch.randn(4, 100, requires_grad=True)
    assert saved_tensor_bytes(lambda: _SaveOutput.apply(x)) == 4 * 100 * 4
    w = torch.randn(100, 100, requires_grad=True)
    # tanh saves its output h; mm saves h again (same storage) and w (excluded); the outer tanh
    # saves its output: two [4, 100] float32 storages.
    n = saved_tensor_bytes(lambda: torch.tanh(torch.tanh(x) @ w), exclude=[w])
    assert n == 2 * (4 * 100 * 4)


class _Scale(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_measure_training_step_is_exact_on_a_known_step():
    d = 1024
    r = measure_training_step(
        _Scale(d), lambda B: (torch.randn(B, d), torch.zeros(B)), loss_fn=lambda o, t: o.sum()
    )
    # forward: out [B, d]; backward: grad*x [B, d] + its reduction [d] + two scalars (loss, ones)
    peaks = [round(p * MIB) for p in r["peak_mib"]]
    assert peaks == [4 * 2 * d + 4 * d + 8, 4 * 4 * d + 4 * d + 8]
    assert r["mib_per_image"] * MIB == 4 * d
    assert r["saved_mib_per_image"] * MIB == 4 * d  # x is saved, the parameter is excluded
    assert r["params_mib"] * MIB == r["grads_mib"] * MIB == 4 * d
    assert r["method"] == "dispatch-tracker"


class _Blocks(nn.Module):
    def __init__(self, ckpt: bool, n: int = 4, d: int = 64) -> None:
        super().__init__()
        self.ckpt = ckpt
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d), nn.Tanh()) for _ in range(n)
        )
        self.head = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False) if self.ckpt else b(x)
        return self.head(x)


def test_checkpointing_lowers_measured_memory_and_model_is_restored():
    torch.manual_seed(0)
    plain = _Blocks(ckpt=False)
    ckpt = _Blocks(ckpt=True)
    ckpt.load_state_dict(plain.state_dict())
    ref = {k: v.clone() for k, v in plain.state_dict().items()}

    def batch(B: int):
        return torch.randn(B, 64), torch.randint(0, 3, (B,))

    adam = lambda p: torch.optim.Adam(p, lr=0.1)  # noqa: E731
    r_plain = measure_training_step(plain, batch, batches=(4, 8), optimizer=adam)
    r_ckpt = measure_training_step(ckpt, batch, batches=(4, 8))
    assert r_ckpt["mib_per_image"] < r_plain["mib_per_image"]
    assert r_ckpt["saved_mib_per_image"] < r_plain["saved_mib_per_image"]
    # Adam keeps two moments per parameter (plus a scalar step per parameter tensor)
    assert r_plain["optimizer_state_mib"] >= 2 * r_plain["params_mib"]
    for k, v in plain.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert all(p.grad is None for p in plain.parameters())
    assert tensor_bytes(plain.parameters()) == round(r_plain["params_mib"] * MIB)


def test_two_ranges_give_the_slope_and_the_batch_independent_part_exactly():
    d = 512
    r = measure_training_step(
        _Scale(d), lambda B: (torch.randn(B, d), torch.zeros(B)), loss_fn=lambda o, t: o.sum(),
        ranges=((2, 4), (16, 32)),
    )
    # peak(B) = out [B, d] + grad*x [B, d] ... see above: 4*B*d + 4*d + 8 bytes, so the slope is
    # 4d per image at both ranges and the intercept (with .grad pre-allocated) is the [d]
    # reduction of the weight's gradient plus the two scalars: 4d + 8 bytes.
    assert [g["batches"] for g in r["ranges"]] == [[2, 4], [16, 32]]
    for g in r["ranges"]:
        assert g["mib_per_image"] * MIB == pytest.approx(4 * d, abs=1e-6)
        assert g["fixed_mib"] * MIB == pytest.approx(4 * d + 8, abs=1e-6)
        assert [round(p * MIB) for p in g["peak_mib"]] == [
            4 * B * d + 4 * d + 8 for B in g["batches"]]
    assert r["fixed_mib"] == r["ranges"][0]["fixed_mib"]
    assert r["batches"] == [2, 4] and len(r["saved_mib"]) == 2  # saved: first range only
    assert r["peak_mib_per_image"] * MIB == pytest.approx((4 * 32 * d + 4 * d + 8) / 32)


def test_a_peak_that_moves_with_the_batch_shows_in_the_two_ranges():
    """A batch-independent temporary (a weight-sized buffer) sets the peak at small batches and
    the activations at large ones: the small range sees a small slope and a large fixed part."""
    d, big = 256, 64 * 1024  # big: 256 KiB, bigger than the activations below batch 64

    class _Workspace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(d))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tmp = torch.empty(big)  # a batch-independent temporary, freed at once
            del tmp
            return x * self.w

    r = measure_training_step(_Workspace(), lambda B: (torch.randn(B, d), torch.zeros(B)),
                              loss_fn=lambda o, t: o.sum(), ranges=((1, 2), (256, 512)))
    small, large = r["ranges"]
    assert small["mib_per_image"] == 0 and small["fixed_mib"] * MIB == 4 * big
    assert large["mib_per_image"] * MIB == pytest.approx(4 * d)
    assert large["fixed_mib"] * MIB == pytest.approx(4 * d + 8)


def test_measure_training_step_rejects_bad_batches():
    with pytest.raises(ValueError, match="two distinct"):
        measure_training_step(
            _Scale(4), lambda B: (torch.randn(B, 4), torch.zeros(B)), batches=(2,)
        )
    with pytest.raises(TypeError, match="pair"):
        measure_training_step(_Scale(4), lambda B: torch.randn(B, 4), batches=(1, 2))
    with pytest.raises(ValueError, match="distinct"):
        measure_training_step(_Scale(4), lambda B: (torch.randn(B, 4), torch.zeros(B)),
                              ranges=((2, 4), (8, 8)))
