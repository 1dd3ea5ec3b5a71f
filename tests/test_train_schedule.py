"""torch's lr_scheduler and AveragedModel in training give the numbers of the published
formulas: the learning rate of every optimiser step of a real run, and the EMA weights after
every step, computed here from the equations (float64), not from the code under test."""

import math

import pytest
import torch
from torch import nn

from revsnn.train import TrainConfig, run_training
from revsnn.train.optim import build_ema, build_optimizer, build_scheduler, ema_update
from test_train_tiny import tiny_factory


def lr_formula(step, spe, cfg):
    """Linear warm-up from warmup_lr to lr over warmup_epochs, then cosine to min_lr, step
    decay lr * gamma^#{milestones <= epoch}, or constant (per optimiser step)."""
    total = cfg.epochs * spe
    warm = int(round(cfg.warmup_epochs * spe))
    if step < warm:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / warm
    if cfg.scheduler == "cosine":
        p = (step - warm) / (total - warm)
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** sum(step // spe >= m for m in cfg.milestones)
    return cfg.lr


CASES = {
    "main job (cosine, half an epoch of warm-up)": (TrainConfig(), 22),
    "fashion recipe (cosine, 0.3 epoch warm-up)": (
        TrainConfig(epochs=4, lr=6e-3, warmup_epochs=0.3, min_lr=1e-5), 468),
    "imagenet recipe (20 warm-up epochs, lr 8e-3 -> 4e-6)": (
        TrainConfig(epochs=300, lr=8e-3, warmup_epochs=20, warmup_lr=1e-6, min_lr=4e-6), 5),
    "cifar recipe (step decay at 100, 150)": (
        TrainConfig(epochs=200, lr=0.1, scheduler="step", milestones=[100, 150], gamma=0.1,
                    warmup_epochs=0, optimizer="sgd"), 3),
    "step decay after warm-up": (
        TrainConfig(epochs=6, lr=0.1, scheduler="step", milestones=[2, 4], warmup_epochs=1,
                    warmup_lr=1e-3), 10),
    "constant after warm-up": (TrainConfig(epochs=3, scheduler="constant", warmup_epochs=1), 7),
}


@pytest.mark.parametrize("cfg, spe", CASES.values(), ids=list(CASES))
def test_lr_of_every_step_equals_the_formula(cfg, spe):
    p = nn.Parameter(torch.zeros(3, 3))  # no gradient: each optimiser step is a no-op
    opt = build_optimizer(nn.ParameterList([p]), cfg)
    sched = build_scheduler(opt, cfg, spe)
    worst = 0.0
    for step in range(cfg.epochs * spe):
        got = [g["lr"] for g in opt.param_groups]
        want = lr_formula(step, spe, cfg)
        worst = max(worst, max(abs(g - want) / want for g in got))
        opt.step()
        sched.step()
    assert worst <= 1e-12  # torch's recursion: float64 rounding only (measured <= 3e-14)


def test_the_loop_steps_at_the_formula_rates(tmp_path):
    """A real run: metrics.csv's lr (the rate of each epoch's last step) follows the formula."""
    cfg = TrainConfig(model="tiny", data="digits", T=2, epochs=3, batch_size=32, lr=3e-3,
                      max_steps=4, warmup_epochs=0.5, progress=False, measure_memory=False,
                      out=str(tmp_path / "r"))
    rates = []
    run_training(cfg, tiny_factory, log=lambda s: rates.append(s))
    got = [float(line.split(" lr ")[1].split()[0]) for line in rates if line.startswith("epoch")]
    want = [lr_formula(4 * (e + 1) - 1, 4, cfg) for e in range(3)]
    assert got == pytest.approx([float(f"{w:.2e}") for w in want], rel=1e-9)


def test_ema_weights_follow_the_formula():
    """w_ema(0) = w(0), w_ema(t) = d w_ema(t-1) + (1 - d) w(t) over parameters and float
    buffers (BatchNorm statistics); the integer step counter is copied."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(3))
    m(torch.randn(2, 2, 6, 6))
    d = 0.9
    ema = build_ema(m, d)
    ref = {k: v.detach().double().clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for _ in range(25):
        m(torch.randn(4, 2, 6, 6)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema_update(ema, m)
        for k, v in m.state_dict().items():
            ref[k] = d * ref[k] + (1 - d) * v.double() if v.is_floating_point() else v.double()
    got = ema.module.state_dict()
    for k, v in ref.items():
        if got[k].is_floating_point():
            torch.testing.assert_close(got[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(got[k].double(), v), k
    assert int(got["1.num_batches_tracked"]) == 26  # copied, not averaged
