"""Batch-wise augmentation and the epoch iteration (shuffling, data-parallel shares)."""

import pytest
import torch

from revsnn.data import BatchAugment, Loader, Mixup, load_dataset
from revsnn.data.randaugment import OPS, rand_augment
from revsnn.data.transforms import hflip, normalize, random_crop, random_erase


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_random_crop_is_a_shift_of_the_zero_padded_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5) + 1
    y = random_crop(x, 2, _gen(1))
    for b in range(2):
        xp = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        hits = [(i, j) for i in range(5) for j in range(5)
                if torch.equal(xp[:, i:i + 5, j:j + 5], y[b])]
        assert hits  # the output is one 5x5 window of the padded image
    frames = x.unsqueeze(1).expand(2, 4, 3, 5, 5)  # [B, T, C, H, W]: same crop on every frame
    yf = random_crop(frames, 2, _gen(1))
    assert torch.equal(yf[:, 2], y) and torch.equal(yf[:, 0], y)


def test_flip_normalize_and_erase():
    x = torch.rand(64, 3, 4, 6)
    y = hflip(x, _gen(2))
    flipped = [torch.equal(y[b], x[b].flip(-1)) for b in range(64)]
    kept = [torch.equal(y[b], x[b]) for b in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 16 < sum(flipped) < 48
    n = normalize(x, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert torch.allclose(n[:, 1], (x[:, 1] - 0.25) / 0.25)
    e = random_erase(x, 1.0, _gen(3))
    changed = (e != x)  # [B, C, H, W]
    assert changed.any(dim=(1, 2, 3)).all()  # p = 1: every sample has a rectangle
    rows, cols = changed[0, 0].any(1), changed[0, 0].any(0)
    assert torch.equal(changed[0, 0], rows[:, None] & cols[None, :])  # it is a rectangle
    assert torch.equal(random_erase(x, 0.0, _gen(3)), x)


def test_draws_of_a_share_equal_the_draws_of_the_global_batch():
    aug = BatchAugment((0.5,), (0.2,), crop_padding=2, hflip=True, random_erase=0.5,
                       randaugment=(2, 9.0, 0.5))
    x = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    whole = aug(x, _gen(7))
    part = aug(x[3:6], _gen(7), total=8, part=slice(3, 6))
    assert torch.allclose(part, whole[3:6], atol=1e-5)  # batched kernels round differently
    assert torch.equal(aug(x, None, train=False), (x.float() / 255 - 0.5) / 0.2)


def test_mixup_and_cutmix_soft_targets():
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    xm, t = Mixup(10, alpha=0.5)(x, y, _gen(4))
    assert torch.allclose(t.sum(1), torch.ones(6))
    lam = float(t[0, 0])
    assert torch.allclose(xm, lam * x + (1 - lam) * x.flip(0))
    xc, tc = Mixup(10, cutmix_alpha=1.0)(x, y, _gen(5))
    pasted = (xc != x).float().mean(dim=(1, 2, 3))  # fraction of pixels from the partner
    assert float(pasted[0]) > 0
    assert float(tc[0, 0]) == pytest.approx(1 - float(pasted[0]))  # lam = area kept
    assert float(tc[0, 5]) == pytest.approx(float(pasted[0]))  # partner of 0 is sample 5
    assert torch.allclose(tc.sum(1), torch.ones(6))
    _, t0 = Mixup(10)(x, y, _gen(6))
    assert torch.equal(t0, torch.nn.functional.one_hot(y, 10).float())


def test_randaugment_ops_keep_range_and_shape():
    x = torch.rand(len(OPS) * 2, 3, 12, 12)
    for name, op in OPS.items():
        v, s = torch.full((len(x),), 0.7), torch.ones(len(x))
        y = op(x, v, s).clamp(0, 1)
        assert y.shape == x.shape and torch.isfinite(y).all(), name
    y = rand_augment(x, 2, 9.0, 0.5, _gen(8))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)


def test_loader_epochs_shuffle_reproducibly_and_ranks_cover_the_batch():
    ds = load_dataset("digits", "train")
    one = Loader(ds, 32, train=True, seed=3)
    one.set_epoch(2)
    single = [b.y.clone() for b in one]
    again = Loader(ds, 32, train=True, seed=3)
    again.set_epoch(2)
    assert all(torch.equal(a, b.y) for a, b in zip(single, again))
    again.set_epoch(3)
    assert not torch.equal(single[0], next(iter(again)).y)
    assert len(single) == 1437 // 32  # partial last batch dropped in training
    shares = []
    for rank in range(2):
        r = Loader(ds, 32, train=True, seed=3, rank=rank, world=2)
        r.set_epoch(2)
        shares.append([b for b in r])
    for s, (b0, b1) in enumerate(zip(*shares)):
        assert b0.part == slice(0, 16) and b1.part == slice(16, 32) and b0.total == 32
        assert torch.equal(torch.cat([b0.y, b1.y]), single[s])
    with pytest.raises(ValueError, match="divisible"):
        Loader(ds, 33, train=True, world=2)
    test = Loader(load_dataset("digits", "test"), 100, train=False)
    assert sum(len(b.y) for b in test) == 360  # evaluation keeps every image
