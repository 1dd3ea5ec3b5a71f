"""Losses, optimisers, AGC and checkpoint files (schedules and EMA: test_train_schedule.py)."""

import pickle
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from revsnn.train import (
    CheckpointError,
    Lamb,
    TrainConfig,
    adaptive_clip_grad,
    build_optimizer,
    column_loss,
    load_checkpoint,
    save_checkpoint,
    soft_cross_entropy,
)
from revsnn.train.checkpoint import load_model_state


def test_soft_cross_entropy_matches_torch_for_hard_and_one_hot_targets():
    z = torch.randn(5, 7)
    y = torch.tensor([0, 3, 6, 2, 2])
    ref = F.cross_entropy(z, y, label_smoothing=0.1)
    assert torch.allclose(soft_cross_entropy(z, y, 0.1), ref)
    assert torch.allclose(soft_cross_entropy(z, F.one_hot(y, 7).float(), 0.1), ref)
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        soft_cross_entropy(z[0], y[:1])


def test_column_loss_is_the_published_weighting():
    torch.manual_seed(0)
    outs = [torch.randn(4, 10) for _ in range(4)]
    y = torch.randint(0, 10, (4,))
    ce = [F.cross_entropy(o, y, label_smoothing=0.1) for o in outs]
    expected = sum((i + 1) / 4 * c for i, c in enumerate(ce)) + ce[-1]
    assert torch.allclose(column_loss(outs, y), expected)


def test_weight_decay_skips_gains_biases_norms_and_alpha():
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4))
    m.alpha = nn.Parameter(torch.ones(1, 4, 1, 1))
    opt = build_optimizer(m, TrainConfig(optimizer="adamw", weight_decay=0.1))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(m[0].weight)}
    sgd = build_optimizer(m, TrainConfig(optimizer="sgd", weight_decay=1e-4))
    assert all(g["weight_decay"] == 1e-4 for g in sgd.param_groups)


def test_lamb_step_matches_the_equations():
    torch.manual_seed(1)
    w0 = torch.randn(3, 4)
    g = torch.randn(3, 4)
    p = nn.Parameter(w0.clone())
    opt = Lamb([p], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    p.grad = g.clone()
    opt.step()
    m_hat = (0.1 * g) / 0.1
    v_hat = (0.01 * g * g) / 0.01
    u = m_hat / (v_hat.sqrt() + 1e-6) + 0.01 * w0
    r = w0.norm() / u.norm()
    assert torch.allclose(p.detach(), w0 - 0.1 * r * u, atol=1e-6)


def test_agc():
    m = nn.Linear(3, 2)
    # AGC: each output row's gradient is capped at clip * ||w_row||
    m.weight.grad = torch.full((2, 3), 100.0)
    m.bias.grad = torch.tensor([1e-6, 0.0])
    adaptive_clip_grad(m.parameters(), 0.01)
    ratio = m.weight.grad.norm(dim=1) / m.weight.detach().norm(dim=1)
    assert torch.allclose(ratio, torch.full((2,), 0.01), rtol=1e-4)
    assert m.bias.grad[0] == 1e-6  # small gradients untouched


def test_checkpoint_is_atomic_and_refuses_pickled_objects(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"config": {}, "model": {"w": torch.ones(2)}, "epoch": 1})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp file left

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"config": {}, "model": {"w": torch.zeros(2)}, "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint survived the failed write
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"format": "revsnn-checkpoint", "config": {}, "model": {}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    other.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match="other.pt"):
        load_checkpoint(other)
    torch.save({"weights": torch.ones(1)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a revsnn checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_model_state_mismatch_names_keys_and_shapes():
    m = nn.Sequential(nn.Linear(3, 2))
    state = {"0.weight": torch.zeros(2, 4), "1.bias": torch.zeros(2)}
    with pytest.raises(CheckpointError) as err:
        load_model_state(m, state, "run/ck.pt")
    msg = str(err.value)
    assert "run/ck.pt" in msg and "0.bias" in msg and "1.bias" in msg and "(2, 4)" in msg


def test_progress_tqdm_on_a_terminal_plain_lines_otherwise(monkeypatch):
    import io

    from revsnn.train import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    pytest.importorskip("tqdm", reason="tqdm is not installed (the dev extra has it)")
    tty = Tty()
    bar = progress.make_progress(4, "epoch 1/2", stream=tty, initial=1, later_steps=6)
    for _ in range(3):
        bar.update(8, 0.5, 6)
    bar.close()
    last = tty.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("epoch 1/2: 100%") and " 4/4 " in last  # tqdm's bar, resumed at 1
    assert "loss 0.5000 acc  75.0%" in last and "run ETA 0:00" in last
    # without tqdm on a terminal, and on a log file: a plain line every log_every seconds
    monkeypatch.setitem(sys.modules, "tqdm", None)
    for stream in (Tty(), io.StringIO()):
        quiet = progress.make_progress(4, "epoch 1/2", stream=stream)
        slow = progress.make_progress(4, "epoch 1/2", stream=stream, log_every=0.0)
        for _ in range(4):
            quiet.update(8, 0.5, 6)
            slow.update(8, 0.5, 6)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3 and "\r" not in stream.getvalue()  # none at the end
        assert lines[0].startswith("epoch 1/2 step 1/4 loss 0.5000 acc  75.0%")
        assert lines[0].endswith("ETA 0:00")
