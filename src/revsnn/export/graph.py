"""Building a NIR graph: per-step signals as sums of node outputs, channel parts, layers.

NIR has no add node and no channel split or concatenation: several edges into one node sum,
and every node works on one tensor. The exporter therefore carries each value of the network as
a :class:`Signal` -- the sum of the outputs of some nodes (its ``terms``), each of the value's
per-step shape -- and a stream that the network splits along channels (a reversible stream's
halves ``x1, x2``) as a list of such signals, its *parts*:

- ``y1 = x1 + F(x2)`` is ``Signal(x1.terms + F.terms)``: every node reading y1 gets one edge
  from each term;
- an elementwise layer (neuron, pooling) applied to a split stream is one node per part;
- a channel-mixing layer (conv, affine) ``y = W x + b`` on parts ``x_i`` with outputs split into
  parts ``y_j`` is one node per block ``W[j, i]`` and ``y_j = sum_i W[j, i] x_i + b_j`` (the bias
  on the block of the first input part).

Shapes are per time step and per sample, without the batch dimension, as NIR writes them
(``[C, H, W]`` or ``[N]``). Node names are the modules' names in the model, with a suffix for the
part (``.p0``, ``.p1``) or block (``.o1i0``: output part 1 from input part 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ExportError, require_nir

__all__ = ["Signal", "Stream", "GraphBuilder", "conv_output", "split_sizes"]

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class Signal:
    """A per-step value: the sum of the outputs of the nodes ``terms``."""

    terms: Tuple[str, ...]
    shape: Shape

    def __add__(self, other: Signal) -> Signal:
        if self.shape != other.shape:
            raise ExportError(f"cannot add values of shapes {self.shape} and {other.shape}")
        return Signal(self.terms + other.terms, self.shape)


Stream = List[Signal]  # channel parts (dim 0 of the per-step shape), in order


def split_sizes(c: int, parts: int) -> List[int]:
    """``parts`` equal channel parts of ``c`` (the halves of a reversible stream)."""
    if c % parts:
        raise ExportError(f"cannot split {c} channels into {parts} equal parts")
    return [c // parts] * parts


def conv_output(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int]) -> Tuple[int, ...]:
    """``floor((n + 2p - d (k - 1) - 1) / s) + 1`` per spatial dimension."""
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(size, kernel, stride, padding, dilation))


class GraphBuilder:
    """Nodes and edges of a NIR graph under construction."""

    def __init__(self) -> None:
        self.nir = require_nir()
        self.nodes: Dict[str, Any] = {}
        self.edges: List[Tuple[str, str]] = []

    def add(self, name: str, node: Any, inputs: Optional[Signal], shape: Shape) -> Signal:
        """Add ``node`` fed by every term of ``inputs``; return its output as a signal."""
        if name in self.nodes:
            raise ExportError(f"two NIR nodes would be named {name!r}")
        self.nodes[name] = node
        if inputs is not None:
            self.edges += [(t, name) for t in inputs.terms]
        return Signal((name,), tuple(int(s) for s in shape))

    # ------------------------------------------------------------------ elementwise
    def per_part(self, name: str, x: Stream, make: Callable[[Signal, dict], Tuple[Any, Shape]]
                 ) -> Stream:
        """One node per part: ``make(part, metadata) -> (node, output shape)``."""
        out, c0 = [], 0
        for i, part in enumerate(x):
            meta = {"channels": np.array([c0, c0 + part.shape[0]])}
            node, shape = make(part, meta)
            out.append(self.add(name if len(x) == 1 else f"{name}.p{i}", node, part, shape))
            c0 += part.shape[0]
        return out

    # ------------------------------------------------------------------ channel mixing
    def mix(self, name: str, x: Stream, w: np.ndarray, b: np.ndarray, out_sizes: Sequence[int],
            make: Callable[[np.ndarray, np.ndarray, Shape], Tuple[Any, Shape]]) -> Stream:
        """``y = W x + b`` (W: ``[C_out, C_in, ...]``) from input parts to output parts of
        ``out_sizes`` channels; ``make(W_block, b_block, in_shape) -> (node, out_shape)``."""
        if sum(out_sizes) != w.shape[0] or sum(p.shape[0] for p in x) != w.shape[1]:
            raise ExportError(f"{name}: weight {w.shape} does not match parts "
                              f"{[p.shape for p in x]} -> {list(out_sizes)}")
        out: Stream = []
        o0 = 0
        for j, co in enumerate(out_sizes):
            acc: Optional[Signal] = None
            i0 = 0
            for i, part in enumerate(x):
                ci = part.shape[0]
                wb = np.ascontiguousarray(w[o0:o0 + co, i0:i0 + ci])
                bb = b[o0:o0 + co].copy() if i == 0 else np.zeros(co)
                node, shape = make(wb, bb, part.shape)
                if len(x) == 1:
                    label = name if len(out_sizes) == 1 else f"{name}.o{j}"
                else:
                    label = f"{name}.i{i}" if len(out_sizes) == 1 else f"{name}.o{j}i{i}"
                s = self.add(label, node, part, shape)
                acc = s if acc is None else acc + s
                i0 += ci
            out.append(acc)
            o0 += co
        return out

    def graph(self, metadata: dict) -> Any:
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)
