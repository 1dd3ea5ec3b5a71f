"""A tiny reversible model for the training tests (importable by spawned DDP workers), and the
checks that make it a fair stand-in: its reversible gradients equal plain autograd's, and it
shares one conv between two branches."""

import torch
from torch import nn

from revsnn.models.base import SpikingModel
from revsnn.reversible import RevCoupling, ReversibleSequence


class Branch(nn.Module):
    """F or G: conv -> norm -> tanh on ``[T, B, C, H, W]``; ``conv`` may be shared."""

    def __init__(self, c: int, norm: str, shared: nn.Module = None) -> None:
        super().__init__()
        self.conv = shared if shared is not None else nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(2, c)

    def forward(self, x):
        T, B = x.shape[:2]
        y = torch.tanh(self.norm(self.conv(x.flatten(0, 1))))  # [T*B, C, H, W]
        return y.unflatten(0, (T, B))  # [T, B, C, H, W]


class Tiny(SpikingModel):
    """Stem -> 2 reversible couplings (one conv shared by two branches) -> mean pool -> two
    heads (an auxiliary head on the first time step, the final head on the mean over T)."""

    def __init__(self, num_classes=10, T=2, in_channels=1, memory_mode="reversible", width=4,
                 norm="gn", dropout=0.0, nan_after=None):
        super().__init__(num_classes, T, in_channels, memory_mode)
        self.stem = nn.Conv2d(in_channels, 2 * width, 3, padding=1)
        shared = nn.Conv2d(width, width, 3, padding=1)
        self.seq = ReversibleSequence(
            [RevCoupling(Branch(width, norm), Branch(width, norm, shared)),
             RevCoupling(Branch(width, norm, shared), Branch(width, norm))],
            memory_mode=memory_mode,
        )
        self.drop = nn.Dropout(dropout)
        self.aux = nn.Linear(2 * width, num_classes)
        self.head = nn.Linear(2 * width, num_classes)
        self.nan_after = nan_after  # return NaN logits from this training call on (tests)
        self.train_calls = 0

    def forward_heads(self, x):
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.T, *x.shape)  # [T, B, C, H, W]
        T, B = x.shape[:2]
        s = self.stem(x.flatten(0, 1)).unflatten(0, (T, B))  # [T, B, 2w, H, W]
        f = self.drop(self.seq(s).mean(dim=(3, 4)))  # [T, B, 2w]
        out = [self.aux(f[0]), self.head(f.mean(0))]
        if self.training and torch.is_grad_enabled():
            self.train_calls += 1
            if self.nan_after is not None and self.train_calls > self.nan_after:
                out = [o * float("nan") for o in out]
        return out

    def forward(self, x):
        return self.forward_heads(x)[-1]


def tiny_factory(cfg, info, **kw):
    return Tiny(info.num_classes, cfg.T, info.in_channels, cfg.memory_mode, **{
        **cfg.model_kwargs, **kw})


def test_tiny_reversible_gradients_equal_plain_autograd():
    torch.manual_seed(0)
    m = Tiny(norm="gn").double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    grads = {}
    for mode in ("none", "reversible"):
        m.set_memory_mode(mode)
        m.zero_grad()
        sum(o.sum() for o in m.forward_heads(x)).backward()
        grads[mode] = {k: p.grad.clone() for k, p in m.named_parameters()}
    for k, g in grads["none"].items():
        torch.testing.assert_close(grads["reversible"][k], g, rtol=1e-9, atol=1e-12)
    assert m.seq.recompute_count == 4  # two couplings, F and G each recomputed once


def test_tiny_shares_one_conv_between_two_branches():
    m = Tiny()
    assert m.seq.blocks[0].g.conv is m.seq.blocks[1].f.conv
    names = [k for k in m.state_dict() if k.endswith("conv.weight")]
    assert len(names) == 4 and len({id(p) for p in m.parameters()}) == len(list(m.parameters()))
