"""``from_nir(graph)``: a torch module that runs a NIR graph over T time steps.

The graph is the network of one step (nodes: ``Input``, ``Output``, ``Affine``, ``Linear``,
``Conv2d``, ``Conv1d``, ``Scale``, ``Flatten``, ``AvgPool2d``, ``SumPool2d``, ``Threshold``,
``IF``, ``LIF``, ``LI``, ``I``). Each step evaluates the nodes in topological order; a node's
input is the sum of its incoming edges, added in the order the edges are listed; the neurons
keep their membranes from step to step (:class:`~revsnn.export.neurons.NeuronStep`, forward
Euler with the graph's ``dt``). Cyclic graphs, ``Delay`` and sub-graphs are refused.

:class:`NIRNetwork` takes ``[B, *shape]`` (repeated over T: the graph's ``T`` metadata or the
``T`` argument) or ``[T, B, *shape]`` and returns the outputs of every step ``[T, B, *out]``;
for graphs written by :func:`revsnn.export.to_nir` the logits are their mean over T.
:meth:`NIRNetwork.simulate` also returns every node's output per step (spikes of the neurons).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import ExportError, require_nir
from .neurons import DEFAULT_DT, NeuronStep

__all__ = ["from_nir", "NIRNetwork"]

_NEURONS = ("IF", "LIF", "LI", "I")


def _meta(graph: Any, key: str, default: Any = None) -> Any:
    v = (graph.metadata or {}).get(key, default)
    if isinstance(v, bytes):
        v = v.decode("utf8")
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    return v


def _ints(v: Any) -> Tuple[int, ...]:
    a = np.atleast_1d(np.asarray(v)).astype(int)
    return tuple(int(x) for x in a)


def _order(names: List[str], edges: List[Tuple[str, str]]) -> List[str]:
    """Topological order (Kahn), keeping the listed order among ready nodes."""
    indeg = {n: 0 for n in names}
    for a, b in edges:
        if a not in indeg or b not in indeg:
            raise ExportError(f"edge ({a!r}, {b!r}) names a node the graph does not have")
        indeg[b] += 1
    ready = [n for n in names if indeg[n] == 0]
    out: List[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    if len(out) != len(names):
        cyc = sorted(n for n in names if n not in out)
        raise ExportError(f"from_nir runs acyclic graphs only; nodes on a cycle: "
                          f"{', '.join(cyc[:5])}")
    return out


class _Static(nn.Module):
    """A stateless node as a function of its (batched) input."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], **buffers: torch.Tensor):
        super().__init__()
        self.fn = fn
        for k, v in buffers.items():
            self.register_buffer(k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self, x)


def _static(node: Any, name: str, dtype: torch.dtype, inclusive: bool) -> nn.Module:
    kind = type(node).__name__
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)).to(dtype)  # noqa: E731
    if kind == "Affine":
        return _Static(lambda m, x: F.linear(x, m.w, m.b), w=t(node.weight), b=t(node.bias))
    if kind == "Linear":
        return _Static(lambda m, x: F.linear(x, m.w), w=t(node.weight))
    if kind in ("Conv2d", "Conv1d"):
        conv = F.conv2d if kind == "Conv2d" else F.conv1d
        st, pd, dl = _ints(node.stride), _ints(node.padding), _ints(node.dilation)
        g = int(np.asarray(node.groups))
        return _Static(lambda m, x: conv(x, m.w, m.b, st, pd, dl, g), w=t(node.weight),
                       b=t(node.bias))
    if kind == "Scale":
        return _Static(lambda m, x: x * m.s, s=t(node.scale))
    if kind == "Flatten":
        s0, e0 = int(node.start_dim), int(node.end_dim)
        s1, e1 = (s0 + 1 if s0 >= 0 else s0), (e0 + 1 if e0 >= 0 else e0)  # + batch dim
        return _Static(lambda m, x: x.flatten(s1, e1))
    if kind in ("AvgPool2d", "SumPool2d"):
        k, st, pd = _ints(node.kernel_size), _ints(node.stride), _ints(node.padding)
        k, st, pd = [v * 2 if len(v) == 1 else v for v in (k, st, pd)]
        div = 1 if kind == "SumPool2d" else None
        return _Static(lambda m, x: F.avg_pool2d(x, k, st, pd, count_include_pad=True,
                                                 divisor_override=div))
    if kind == "Threshold":
        if inclusive:
            return _Static(lambda m, x: (x >= m.th).to(x.dtype), th=t(node.threshold))
        return _Static(lambda m, x: (x > m.th).to(x.dtype), th=t(node.threshold))
    raise ExportError(f"{name}: from_nir does not run {kind} nodes")


class NIRNetwork(nn.Module):
    """A NIR graph run over T steps (module docstring)."""

    def __init__(self, graph: Any, dt: Optional[float] = None, T: Optional[int] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        nir = require_nir()
        nodes: Dict[str, Any] = dict(graph.nodes)
        self.metadata = dict(graph.metadata or {})
        self.dt = float(dt if dt is not None else _meta(graph, "dt", DEFAULT_DT))
        t_meta = _meta(graph, "T")
        self.T = int(T if T is not None else t_meta) if (T or t_meta) else None
        inclusive = str(_meta(graph, "firing", "")).find(">=") >= 0
        if dtype is None:
            arrays = [v for n in nodes.values() for v in vars(n).values()
                      if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
            dtype = torch.float64 if any(a.dtype == np.float64 for a in arrays) else torch.float32
        self.inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
        self.outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise ExportError(f"from_nir needs one Input and one Output node, got "
                              f"{len(self.inputs)} and {len(self.outputs)}")
        self.in_shape = _ints(nodes[self.inputs[0]].input_type["input"])
        self.edges = [(str(a), str(b)) for a, b in graph.edges]
        self.order = _order(list(nodes), self.edges)
        self.sources = {n: [a for a, b in self.edges if b == n] for n in nodes}
        self.layers = nn.ModuleDict()
        self.keys: Dict[str, str] = {}
        for i, (name, node) in enumerate(nodes.items()):
            kind = type(node).__name__
            if isinstance(node, (nir.Input, nir.Output)):
                continue
            if isinstance(node, nir.NIRGraph) or kind == "Delay":
                raise ExportError(f"{name}: from_nir does not run {kind} nodes")
            key = f"n{i}"
            self.keys[name] = key
            self.layers[key] = (NeuronStep(node, self.dt, dtype, inclusive, name)
                                if kind in _NEURONS else _static(node, name, dtype, inclusive))
        self.dtype = dtype

    def _steps(self, x: torch.Tensor, T: Optional[int]) -> List[torch.Tensor]:
        n = len(self.in_shape)
        if x.dim() == n + 1:
            steps = T or self.T
            if not steps:
                raise ExportError("a static input needs T (the graph has no T metadata)")
            return [x] * int(steps)
        if x.dim() == n + 2:
            return list(x.unbind(0))
        raise ExportError(f"expected [B, {', '.join(map(str, self.in_shape))}] or "
                          f"[T, B, ...], got shape {tuple(x.shape)}")

    def simulate(self, x: torch.Tensor, T: Optional[int] = None, record: bool = True
                 ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``(outputs [T, B, *out], {node name: [T, B, ...] outputs of every node})`` (the
        dict is empty with ``record=False``)."""
        xs = self._steps(x.to(self.dtype), T)
        state: Dict[str, Optional[torch.Tensor]] = {k: None for k in self.keys}
        trace: Dict[str, List[torch.Tensor]] = {k: [] for k in self.order}
        outs = []
        for xt in xs:
            vals: Dict[str, torch.Tensor] = {}
            for name in self.order:
                if name in self.inputs:
                    vals[name] = xt
                else:
                    src = self.sources[name]
                    if not src:
                        raise ExportError(f"{name}: node has no input edge")
                    v = vals[src[0]]
                    for s in src[1:]:
                        v = v + vals[s]
                    if name in self.keys:
                        layer = self.layers[self.keys[name]]
                        if isinstance(layer, NeuronStep):
                            v, state[name] = layer.step(state[name], v)
                        else:
                            v = layer(v)
                    vals[name] = v
                if record:
                    trace[name].append(vals[name])
            outs.append(vals[self.outputs[0]])
        return torch.stack(outs), ({k: torch.stack(v) for k, v in trace.items()} if record
                                   else {})

    def forward(self, x: torch.Tensor, T: Optional[int] = None) -> torch.Tensor:
        return self.simulate(x, T, record=False)[0]


def from_nir(graph: Union[Any, str, Path], dt: Optional[float] = None, T: Optional[int] = None,
             dtype: Optional[torch.dtype] = None) -> NIRNetwork:
    """A :class:`NIRNetwork` running ``graph`` (a ``nir.NIRGraph`` or a ``.nir`` file).

    ``dt`` (seconds per step) and ``T`` default to the graph's metadata (``dt`` else 1e-4);
    ``dtype`` to float64 when the graph's arrays are float64, else float32.
    """
    if isinstance(graph, (str, Path)):
        graph = require_nir().read(str(graph))
    return NIRNetwork(graph, dt=dt, T=T, dtype=dtype)
