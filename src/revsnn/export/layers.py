"""Layer writers: one of our modules applied to a (split) stream, as NIR nodes.

:class:`LayerWriter` walks a module the way its ``forward`` computes, emits NIR nodes into a
:class:`~revsnn.export.graph.GraphBuilder` and returns the output stream. What NIR cannot
express is refused with an :class:`~revsnn.export.errors.ExportError` naming the module.

- neurons (IF, LIF, PLIF, their lean forms): ``nir.IF`` / ``nir.LIF`` per part
  (:mod:`revsnn.export.neurons`);
- conv / linear, with a BatchNorm right after it folded in (:mod:`revsnn.export.fold`):
  ``nir.Conv2d`` / ``nir.Affine`` per block of parts; a weight-standardised conv with the
  weight it convolves with; a grouped conv as the equal dense conv (:func:`ungrouped`); a 1x1
  conv on a pooled vector as an ``Affine``;
- average pooling: ``nir.AvgPool2d`` per part (zero padding counted in the mean, as
  ``torch.nn.AvgPool2d`` with ``count_include_pad=True``);
- ``nn.Sequential``, ``TimeFold`` and the branches of the families in their order;
- reversible sequences: the stages of :meth:`ReversibleSequence.schedule`
  (``r[dst] += h(r[1 - dst])``) on the two halves, as sums of signals.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..models.blocks import ConvBranch, Downsample, SpikingHead
from ..models.pararev_blocks import BranchPair, MergedBlock
from ..models.trevsnn_blocks import FoldedLIF
from ..reversible.sequence import ReversibleSequence
from ..spiking.layers import TimeFold, WSConv2d
from ..spiking.neuron import BaseNeuron
from .errors import ExportError, refuse
from .fold import fold_batchnorm, layer_arrays
from .graph import GraphBuilder, Signal, Stream, conv_output, split_sizes
from .neurons import neuron_node

__all__ = ["LayerWriter", "standardized", "ungrouped"]

_BN = nn.modules.batchnorm._BatchNorm
_PER_SAMPLE_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def standardized(conv: WSConv2d) -> np.ndarray:
    """The weight a weight-standardised conv convolves with (float64)."""
    with torch.no_grad():
        return conv.standardized_weight().detach().to("cpu", torch.float64).numpy().copy()


def ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's weight ``[C_out, C_in / g, k, k]`` as the equal ungrouped weight
    ``[C_out, C_in, k, k]`` (zero outside each group's block; NIR 1.0.8 types grouped convs by
    ``C_in / g`` and SpikingJelly's importer refuses them)."""
    co, ci = w.shape[0], w.shape[1]
    dense = np.zeros((co, ci * groups) + w.shape[2:])
    per = co // groups
    for g in range(groups):
        dense[g * per:(g + 1) * per, g * ci:(g + 1) * ci] = w[g * per:(g + 1) * per]
    return dense


def _pair(v: Any) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


class LayerWriter:
    """Writes modules of ``model`` into ``builder``; node names are the modules' names."""

    def __init__(self, model: nn.Module, builder: GraphBuilder, dt: float) -> None:
        self.b = builder
        self.nir = builder.nir
        self.dt = float(dt)
        self.names: Dict[int, str] = {id(m): n for n, m in model.named_modules()}

    def name(self, m: nn.Module) -> str:
        return self.names.get(id(m), type(m).__name__)

    # ------------------------------------------------------------------ elementwise
    def neuron(self, m: nn.Module, x: Stream) -> Stream:
        where = self.name(m)

        def make(part: Signal, meta: dict):
            node = neuron_node(m, part.shape, self.dt, where, {"module": where, **meta})
            return node, part.shape

        return self.b.per_part(where, x, make)

    def pool(self, m: nn.AvgPool2d, x: Stream, where: Optional[str] = None) -> Stream:
        where = where or self.name(m)
        if m.ceil_mode or not m.count_include_pad or m.divisor_override is not None:
            raise refuse(where, "average pooling with ceil_mode, count_include_pad=False or a "
                         "divisor override has no NIR node (nir.AvgPool2d is torch's default)")
        k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        p = _pair(m.padding)
        return self.pool_node(where, x, k, s, p)

    def pool_node(self, where: str, x: Stream, k: Sequence[int], s: Sequence[int],
                  p: Sequence[int]) -> Stream:
        def make(part: Signal, meta: dict):
            if len(part.shape) != 3:
                raise refuse(where, f"2-d pooling needs [C, H, W] per step, got {part.shape}")
            node = self.nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s),
                                      padding=np.array(p), metadata=meta)
            return node, (part.shape[0],) + conv_output(part.shape[1:], k, s, p, (1, 1))

        return self.b.per_part(where, x, make)

    def global_pool(self, where: str, x: Stream) -> Stream:
        """Mean over H, W then flatten: ``[C, H, W] -> [C]`` per part."""
        hw = x[0].shape[1:]
        pooled = self.pool_node(where, x, hw, hw, (0, 0))
        return self.flatten(f"{where}.flatten", pooled)

    def flatten(self, where: str, x: Stream) -> Stream:
        def make(part: Signal, meta: dict):
            node = self.nir.Flatten(input_type={"input": np.array(part.shape)}, start_dim=0,
                                    end_dim=-1, metadata=meta)
            return node, (int(np.prod(part.shape)),)

        return self.b.per_part(where, x, make)

    # ------------------------------------------------------------------ channel mixing
    def layer(self, m: nn.Module, bn: Optional[nn.Module], x: Stream,
              out_sizes: Optional[Sequence[int]] = None, scale: Optional[Any] = None) -> Stream:
        """conv / linear ``m`` (+ BatchNorm ``bn`` folded in, then a per-channel ``scale``
        such as a layer scale) from the parts of ``x`` to ``out_sizes`` output parts (default:
        one). A weight-standardised conv is written with its standardised weight; a 1x1 conv
        on a vector (after global pooling) as an ``Affine``."""
        where = self.name(m)
        w, b = layer_arrays(m)
        if isinstance(m, WSConv2d):
            w = standardized(m)
        if bn is not None:
            if bn.num_features != w.shape[0]:
                raise refuse(self.name(bn), "BatchNorm width differs from the layer before it")
            w, b = fold_batchnorm(w, b, bn, self.name(bn))
        if scale is not None:
            g = np.asarray(scale.detach().to("cpu", torch.float64)).reshape(-1)
            w, b = w * g.reshape((-1,) + (1,) * (w.ndim - 1)), b * g
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise refuse(where, "weights or folded BatchNorm are not finite (NaN or inf)")
        sizes = list(out_sizes) if out_sizes is not None else [w.shape[0]]
        vector_in = len(x[0].shape) == 1
        if isinstance(m, nn.Conv2d) and not vector_in:
            if m.groups != 1:  # written dense, zeros off the groups' diagonal blocks (exact)
                w = ungrouped(w, int(m.groups))
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise refuse(where, "only convolutions with numeric zero padding are exported")
            st, pd, dl = _pair(m.stride), _pair(m.padding), _pair(m.dilation)

            def make(wb, bb, shape):
                if len(shape) != 3:
                    raise refuse(where, f"Conv2d needs [C, H, W] per step, got {shape}")
                node = self.nir.Conv2d(input_shape=tuple(shape[1:]), weight=wb,
                                       stride=np.array(st), padding=np.array(pd),
                                       dilation=np.array(dl), groups=1, bias=bb,
                                       metadata={"module": where})
                out = conv_output(shape[1:], wb.shape[2:], st, pd, dl)
                return node, (wb.shape[0],) + out
        elif isinstance(m, nn.Linear) or (
                isinstance(m, nn.Conv2d) and m.groups == 1 and w.shape[2:] == (1, 1)):
            if w.ndim == 4:
                w = w[:, :, 0, 0]  # a 1x1 conv on [C, 1, 1] pooled maps is an affine map

            def make(wb, bb, shape):
                if len(shape) != 1:
                    raise refuse(where, f"Linear needs a vector per step, got {shape}")
                return self.nir.Affine(weight=wb, bias=bb, metadata={"module": where}), (
                    wb.shape[0],)
        else:
            raise refuse(where, f"{type(m).__name__} is not a conv or linear layer (or a conv "
                         "other than 1x1 on a pooled vector)")
        return self.b.mix(where, x, w, b, sizes, make)

    def sum_parts(self, where: str, y: Signal) -> Signal:
        """A node holding ``y`` (the identity ``Affine``), for readers whose output nodes do
        not sum their edges."""
        n = y.shape[0]
        node = self.nir.Affine(weight=np.eye(n), bias=np.zeros(n), metadata={"sum": "identity"})
        return self.b.add(where, node, y, y.shape)

    # ------------------------------------------------------------------ composition
    def sequence(self, mods: Sequence[nn.Module], x: Stream) -> Stream:
        """Modules in order; a conv / linear followed by a BatchNorm is one folded node."""
        i = 0
        while i < len(mods):
            m = mods[i]
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bn = nxt if isinstance(nxt, _BN) else None
                x = self.layer(m, bn, x)
                i += 2 if bn is not None else 1
            else:
                x = self.module(m, x)
                i += 1
        return x

    def module(self, m: nn.Module, x: Stream) -> Stream:
        """Any supported module on ``x``; everything else is refused with its name."""
        where = self.name(m)
        if isinstance(m, BaseNeuron):
            return self.neuron(m, x)
        if isinstance(m, FoldedLIF):
            return self.neuron(m.lif, x)
        if isinstance(m, nn.Sequential):
            return self.sequence(list(m), x)
        if isinstance(m, TimeFold):
            return self.module(m.module, x)
        if isinstance(m, ConvBranch):
            return self.sequence([m.sn1, m.conv1, m.sn2, m.conv2], x)
        if isinstance(m, Downsample):
            s = self.module(m.pool, self.neuron(m.neuron, x))
            return self.layer(m.conv, m.bn, s, split_sizes(m.c_out, 2))
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return self.layer(m, None, x)
        if isinstance(m, nn.AvgPool2d):
            return self.pool(m, x)
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(m, ReversibleSequence):
            return self.reversible(m, x)
        if isinstance(m, _BN):
            raise refuse(where, "a BatchNorm that does not follow a conv or linear layer has no "
                         "NIR node (only folded BatchNorm is exported)")
        if isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)):
            raise refuse(where, "max pooling has no NIR node (NIR pools by sum or average)")
        if isinstance(m, _PER_SAMPLE_NORMS):
            raise refuse(where, f"{type(m).__name__} normalises each sample with its own "
                         "statistics at inference; NIR has no node for it")
        raise refuse(where, f"{type(m).__name__} has no NIR mapping in revsnn's exporter")

    def branch(self, m: nn.Module, src: Signal) -> Signal:
        out = self.module(m, [src])
        if len(out) != 1 or out[0].shape != src.shape:
            raise refuse(self.name(m), "a coupling branch must map a half-stream to its shape")
        return out[0]

    def reversible(self, seq: ReversibleSequence, x: Stream) -> Stream:
        """The stages ``r[dst] += h_1(r[1 - dst]) + ...`` on the halves ``(x1, x2)``."""
        if len(x) != 2 or x[0].shape != x[1].shape:
            raise ExportError(f"{self.name(seq)}: a reversible sequence needs two equal halves")
        stages, order = seq.schedule()
        regs = list(x)
        for stage in stages:
            src = regs[1 - stage.dst]
            if stage.fused is None:
                outs = [self.branch(m, src) for _, m in stage.branches]
            elif isinstance(stage.fused, BranchPair):
                outs = [self.branch(stage.fused.g, src), self.branch(stage.fused.f, src)]
            elif isinstance(stage.fused, MergedBlock):
                mb = stage.fused
                raise refuse(self.name(mb.gn), "the merged ParaRevSNN block normalises with "
                             "GroupNorm, which uses each sample's own statistics at inference; "
                             "NIR has no node for it (build the model with merge='pair')")
            else:
                raise refuse(self.name(stage.fused), f"merged module {type(stage.fused).__name__}"
                             " has no NIR mapping")
            for h in outs:
                regs[stage.dst] = regs[stage.dst] + h
        return [regs[order[0]], regs[order[1]]]

    def spiking_head(self, head: SpikingHead, x: Stream) -> Signal:
        """neuron -> global average pool -> FC per part, summed: the per-step logits."""
        s = self.neuron(head.neuron, x)
        f = self.global_pool(f"{self.name(head)}.pool", s)
        y = self.layer(head.fc, None, f)[0]
        return y if len(y.terms) == 1 else self.sum_parts(f"{self.name(head.fc)}.sum", y)
