"""``to_nir(model, sample_input)``: the inference network of a revsnn model as a NIR graph.

The graph is the network of **one time step**: a reader feeds it the input of step t
(the static image at every step -- direct encoding -- or frame t), keeps the neurons' membranes
from step to step, and the model's logits are the **mean over the T steps** of the graph's
output. The graph's metadata says so (``input``, ``T``, ``readout``), with the time step ``dt``
the neurons were discretised with and the firing rule (:mod:`revsnn.export.neurons`).

What is written (per family):

- RevSResNet, ParaRevSNN (``merge="pair"``): stem conv (+BN folded) split into the two halves
  of the stream, every stage as its reversible stages (``y1 = x1 + F(x2)`` is a node reading
  the edges of x1 and F's output), DS layers per half (neuron and pool per half, the 1x1 conv as
  four blocks), head per half summed in an identity ``Affine``;
- MS-ResNet: the basic blocks with their shortcut as a sum of edges;
- RevMLP: flatten, the encoder split into halves, the couplings, the LIF head;
- T-RevSNN's BPTT counterpart: the weight-standardised stem and levels (depthwise convolutions
  as grouped ``nir.Conv2d``, layer scales folded into the conv before them), its LIF neurons,
  the final head as two ``Affine`` after global pooling.

Refused with an :class:`~revsnn.export.errors.ExportError` naming the layer and the reason:
spiking self-attention (RevSFormer, Spikingformer), T-RevSNN's columns, ParaRevSNN's merged
block (GroupNorm), max pooling, soft-reset neurons, any module without a mapping.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ..models.msresnet import MSResNet
from ..models.revmlp import RevMLP
from ..models.staged import StagedResNet
from ..models.trevsnn_bptt import TRevSNNBPTT
from .errors import ExportError
from .graph import GraphBuilder, Signal, Stream, split_sizes
from .layers import LayerWriter
from .neurons import DEFAULT_DT

__all__ = ["to_nir", "SUPPORTED", "REFUSED"]

#: families written, by class name
SUPPORTED = ("RevSResNet", "ParaRevSNN (merge='pair')", "MSResNet", "RevMLP", "TRevSNNBPTT")
#: families refused, with the reason
REFUSED = {
    "RevSFormer": "spiking self-attention multiplies two spike signals (Q K^T V); NIR has no "
                  "node for a product of two signals",
    "Spikingformer": "spiking self-attention multiplies two spike signals (Q K^T V); NIR has no "
                     "node for a product of two signals",
    "TRevSNN": "its T columns are T different networks (each column has its own levels "
               "L_k^t, reads column t-1's states through Up paths and alpha c_k^(t-1), and "
               "column T has its own head), while a NIR graph is one network run at every "
               "step; unrolled into one graph, its Up paths would still need a "
               "nearest-neighbour upsampling node, which NIR does not have",
}


def _stem(w: LayerWriter, stem: nn.Module, x: Stream, parts: int) -> Stream:
    sizes = split_sizes(stem.width, parts)
    y = w.layer(stem.conv, stem.bn, x, sizes)
    return w.module(stem.pool, y) if stem.pool is not None else y


def _staged(w: LayerWriter, model: StagedResNet, x: Stream) -> Signal:
    z = _stem(w, model.stem, x, 2)
    for k, stage in enumerate(model.stages):
        if k > 0:
            z = w.module(model.downsamples[k - 1], z)
        z = w.reversible(stage, z)
    return w.spiking_head(model.head, z)


def _msresnet(w: LayerWriter, model: MSResNet, x: Stream) -> Signal:
    z = _stem(w, model.stem, x, 1)
    for block in model.layers:
        y = w.sequence([block.sn1, block.conv1, block.sn2, block.conv2], z)
        short = z if block.shortcut is None else w.sequence(
            [block.sn_short, block.shortcut], z)
        z = [y[0] + short[0]]
    return w.spiking_head(model.head, z)


def _revmlp(w: LayerWriter, model: RevMLP, x: Stream) -> Signal:
    flat = w.flatten("flatten", x)
    z = w.layer(model.encoder, None, flat, split_sizes(model.encoder.out_features, 2))
    z = w.reversible(model.blocks, z)
    head = model.head
    y = w.layer(head.fc, None, w.neuron(head.neuron, z))[0]
    return y if len(y.terms) == 1 else w.sum_parts(f"{w.name(head.fc)}.sum", y)


def _convnext(w: LayerWriter, blk: nn.Module, z: Stream) -> Stream:
    """``z + gamma * dw2(pw2(S(pw1(dw1(S(z))))))`` (gamma folded into dw2)."""
    u = w.sequence([blk.spike1, blk.dw1, blk.pw1], z)
    y = w.layer(blk.pw2, None, w.module(blk.spike2, u))
    y = w.layer(blk.dw2, None, y, scale=blk.gamma)
    return [z[0] + y[0]]


def _trevsnn_bptt(w: LayerWriter, model: TRevSNNBPTT, x: Stream) -> Signal:
    z = w.sequence(list(model.stem), x)
    for level in model.levels:
        if level.entry is not None:
            z = w.module(level.entry, z)
        z = _convnext(w, level.block2, _convnext(w, level.block1, z))
    head = model.head
    f = w.global_pool(f"{w.name(head)}.pool", w.module(model.head_spike, z))
    return w.layer(head.conv2, None, w.layer(head.conv1, None, f))[0]


_WRITERS = ((StagedResNet, _staged), (MSResNet, _msresnet), (RevMLP, _revmlp),
            (TRevSNNBPTT, _trevsnn_bptt))


def to_nir(model: nn.Module, sample_input: torch.Tensor, dt: float = DEFAULT_DT,
           name: Optional[str] = None) -> Any:
    """The inference network of ``model`` as a ``nir.NIRGraph`` (see the module docstring).

    Args:
        model: a revsnn model (its weights and BatchNorm running statistics are read; the
            model is not changed).
        sample_input: an input the model takes, ``[B, C, H, W]`` (a static image, repeated over
            T) or ``[T, B, C, H, W]`` (frames); it fixes the per-step shapes.
        dt: seconds per time step of the neurons' discretisation (metadata ``dt``).
        name: the model's registered name, recorded in the metadata.

    Raises:
        ExportError: the model or one of its layers cannot be written (names it and why).
    """
    cls = type(model).__name__
    if cls in REFUSED:
        raise ExportError(f"{cls}: {REFUSED[cls]}")
    writer_fn = next((fn for c, fn in _WRITERS if isinstance(model, c)), None)
    if writer_fn is None:
        raise ExportError(f"{cls}: revsnn's NIR exporter writes {', '.join(SUPPORTED)}, not "
                          f"{cls}")
    if not isinstance(sample_input, torch.Tensor) or sample_input.dim() not in (4, 5):
        got = tuple(sample_input.shape) if isinstance(sample_input, torch.Tensor) else sample_input
        raise ExportError(f"sample_input must be [B, C, H, W] or [T, B, C, H, W], got {got}")
    if not float(dt) > 0:
        raise ExportError(f"dt must be a positive number of seconds, got {dt}")
    model.check_input(sample_input)  # the model's own shape errors
    static = sample_input.dim() == 4
    shape = tuple(int(s) for s in sample_input.shape[-3:])
    b = GraphBuilder()
    w = LayerWriter(model, b, dt)
    x = [b.add("input", b.nir.Input(input_type=np.array(shape)), None, shape)]
    y = writer_fn(w, model, x)
    if len(y.terms) > 1:  # an output node reads one node (readers do not sum its edges)
        y = w.sum_parts("output.sum", y)
    b.add("output", b.nir.Output(output_type=np.array(y.shape)), y, y.shape)
    meta = {
        "producer": "revsnn",
        "model": name or cls,
        "family": cls,
        "T": int(model.T),
        "dt": float(dt),
        "input": ("static: the same image at every one of the T steps (direct encoding)"
                  if static else "frames: frame t at step t"),
        "input_repeat": int(static),
        "readout": "mean over the T steps of the output",
        "firing": "S = 1 where v >= v_threshold (then v = v_reset)",
        "discretisation": "forward Euler with dt: IF v += dt r I; LIF v += (dt / tau) "
                          "(v_leak - v + r I)",
    }
    return b.graph(meta)
