"""Synaptic operations and energy from a real forward pass.

For every synaptic layer call (``nn.Conv1d/2d/3d``, ``nn.Linear`` by forward hooks; ``matmul``
/ ``@`` / ``bmm`` / ``mm`` outside those layers, e.g. in spiking self-attention, by a
``TorchFunctionMode``) the dense operation count is

    Conv:   ops = numel(output) * (C_in / groups) * prod(kernel_size)
    Linear: ops = numel(output) * in_features
    A @ B:  ops = numel(output) * A.shape[-1]

If the layer's input is binary (every value in {0, 1}: spikes), its operations are
accumulates, ``ACs = r * ops`` with the firing rate ``r = nnz(input) / numel(input)``;
otherwise they are ``MACs = ops``. For ``A @ B`` the rate of A is used when A is binary, else
the rate of B when B is binary. Energy

    E = E_MAC * MACs + E_AC * ACs,    E_MAC = 4.6 pJ, E_AC = 0.9 pJ (45 nm; overridable)

reported per layer and in total, **per image** in mJ: counts are summed over every call of a
layer (time steps looped or folded into the batch as ``[T*B, ...]``) and divided by the batch
size B -- the number of images, never T*B. Biases, normalisation, neuron updates and residual
additions are not synaptic operations and are not counted.

Which inputs count as spikes (``spike_input=``, a :class:`SpikeInput`):

- ``SpikeInput.STRICT`` (default): only a layer whose own input tensor
  is binary counts ACs. A layer fed by another layer's real-valued output counts MACs, e.g.
  ``pw1`` in T-RevSNN's ``u = pw1(dw1(S(z)))``.
- ``SpikeInput.LINEAR_CHAIN``: in addition, a Conv/Linear layer whose input is *the very output
  tensor* of a Conv/Linear layer that counted as ACs (binary input, or chained itself) counts
  ``ACs = r * ops`` with the rate ``r`` of the spike tensor that started the chain. Reason:
  ``pw1(dw1(s))`` is affine in the spikes ``s`` (dw1's bias is a constant), so the composition
  is one linear synaptic map that hardware can run event-driven -- every spike is accumulated
  into the outputs it reaches -- and SNN papers count it as SOPs = firing rate x FLOPs for every
  layer fed by spikes directly or through purely linear layers. This is the convention needed
  to reproduce published SNN energy figures (e.g. T-RevSNN's 2.8 mJ, Hu et al. ICML 2024); it
  is opt-in, STRICT stays the default of this library. Anything in between breaks the chain
  and the layer counts MACs as before: normalisation, an addition, a nonlinearity, a reshape
  or view (a new tensor object), or an in-place change of the output (its version counter
  moved). The first layer on real images is never chained. Identity is tracked by a weak
  reference to the output tensor, so a freed tensor whose ``id`` is reused starts nothing.
  Matmuls outside the hooked layers (``A @ B``, e.g. spike attention, bilinear in its operands)
  neither start nor continue a chain.
"""

from __future__ import annotations

import enum
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..measure import batch_of

__all__ = [
    "E_MAC_PJ",
    "E_AC_PJ",
    "LayerOps",
    "EnergyReport",
    "SpikeInput",
    "count_synops",
    "dense_ops",
]

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
PJ_TO_MJ = 1e-9

DEFAULT_LAYERS: Tuple[Type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class SpikeInput(str, enum.Enum):
    """Which layer inputs count as spikes (ACs); see the module docstring."""

    STRICT = "strict"  # the layer's own input is binary (the default)
    LINEAR_CHAIN = "linear_chain"  # ... or the untouched output of a layer that counted ACs

    @classmethod
    def parse(cls, value: Union[SpikeInput, str]) -> SpikeInput:
        """The enum from itself or its string value (``"strict"``, ``"linear_chain"``)."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            choices = ", ".join(repr(m.value) for m in cls)
            raise ValueError(
                f"unknown spike_input convention {value!r}; expected one of {choices}"
            ) from None


@dataclass
class LayerOps:
    """Operation counts of one layer summed over all its calls in the forward pass (whole
    batch). ``input_nonzeros`` / ``input_elements`` cover the calls counted as ACs: the binary
    input itself, or for a chained call (``SpikeInput.LINEAR_CHAIN``) the spike tensor that
    started the chain."""

    name: str
    kind: str
    calls: int = 0
    dense_ops: int = 0
    macs: float = 0.0
    acs: float = 0.0
    binary_calls: int = 0
    chained_calls: int = 0
    ac_dense_ops: int = 0  # dense ops of the calls counted as ACs (ACs = rate * these)
    input_nonzeros: int = 0
    input_elements: int = 0
    binary_nonzeros: int = 0  # over the calls whose own input was binary (not chained)
    binary_elements: int = 0

    @property
    def firing_rate(self) -> Optional[float]:
        """Fraction of nonzero spikes over the AC calls (binary or chained); ``None`` if none."""
        if self.binary_calls + self.chained_calls == 0 or self.input_elements == 0:
            return None
        return self.input_nonzeros / self.input_elements

    @property
    def spiking(self) -> bool:
        """Every call had a binary input."""
        return self.calls > 0 and self.binary_calls == self.calls

    @property
    def chained(self) -> bool:
        """At least one call counted ACs through a linear chain (none was a plain MAC call)."""
        return self.chained_calls > 0 and self.binary_calls + self.chained_calls == self.calls

    def energy_pj(self, e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> float:
        return e_mac_pj * self.macs + e_ac_pj * self.acs


@dataclass
class EnergyReport:
    """Per-layer counts for one forward pass over ``batch_size`` images."""

    layers: List[LayerOps]
    batch_size: int
    e_mac_pj: float = E_MAC_PJ
    e_ac_pj: float = E_AC_PJ
    extra: Dict[str, Any] = field(default_factory=dict)
    spike_input: SpikeInput = SpikeInput.STRICT

    @property
    def macs(self) -> float:
        """MACs per image."""
        return sum(layer.macs for layer in self.layers) / self.batch_size

    @property
    def acs(self) -> float:
        """ACs per image."""
        return sum(layer.acs for layer in self.layers) / self.batch_size

    @property
    def mean_firing_rate(self) -> Optional[float]:
        """The library's one definition of a network's firing rate: the fraction of nonzero
        elements over every binary (spike) input that a synaptic layer read in this forward,
        weighted by size, ``sum(nnz) / sum(numel)`` over the calls with a binary input
        (chained calls reuse their chain's spikes and are not counted again). ``None`` when no
        layer read spikes."""
        nnz = sum(layer.binary_nonzeros for layer in self.layers)
        numel = sum(layer.binary_elements for layer in self.layers)
        return nnz / numel if numel else None

    @property
    def energy_mj(self) -> float:
        """Energy per image in mJ: (E_MAC * MACs + E_AC * ACs) per image."""
        pj = sum(layer.energy_pj(self.e_mac_pj, self.e_ac_pj) for layer in self.layers)
        return pj / self.batch_size * PJ_TO_MJ

    def rows(self) -> List[Dict[str, Any]]:
        """One dict per layer, per image: name, kind, calls, binary input (``spiking_input``),
        ACs through a linear chain (``chained``), MACs, ACs, firing rate, energy, convention."""
        out = []
        for layer in self.layers:
            rate = layer.firing_rate
            out.append(
                {
                    "layer": layer.name,
                    "kind": layer.kind,
                    "calls": layer.calls,
                    "spiking_input": layer.spiking,
                    "chained": layer.chained,
                    "macs_per_image": layer.macs / self.batch_size,
                    "acs_per_image": layer.acs / self.batch_size,
                    "firing_rate": "" if rate is None else rate,
                    "energy_mj_per_image": layer.energy_pj(self.e_mac_pj, self.e_ac_pj)
                    / self.batch_size
                    * PJ_TO_MJ,
                    "spike_input": self.spike_input.value,
                }
            )
        return out

    def summary(self) -> Dict[str, Any]:
        return {
            "macs_per_image": self.macs,
            "acs_per_image": self.acs,
            "energy_mj_per_image": self.energy_mj,
            "mean_firing_rate": self.mean_firing_rate,
            "e_mac_pj": self.e_mac_pj,
            "e_ac_pj": self.e_ac_pj,
            "batch": self.batch_size,
            "spike_input": self.spike_input.value,
        }


def dense_ops(module: nn.Module, output: torch.Tensor) -> int:
    """Dense multiply-accumulate count of one call of a Conv or Linear layer."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return output.numel() * (module.in_channels // module.groups) * math.prod(
            module.kernel_size
        )
    raise TypeError(f"dense_ops supports Conv1d/2d/3d and Linear, got {type(module).__name__}")


def _binary_nonzeros(t: torch.Tensor) -> Optional[int]:
    """nnz(t) if every value of t is 0 or 1, else None."""
    if t.dtype == torch.bool:
        return int(t.count_nonzero())
    if not bool(((t == 0) | (t == 1)).all()):
        return None
    return int(t.count_nonzero())


def _record(
    entry: LayerOps, x: torch.Tensor, ops: int, chain: Optional[Tuple[int, int]] = None
) -> Optional[Tuple[int, int]]:
    """Count one call; ``chain`` = (nnz, numel) of the spike tensor that started a linear chain
    ending in ``x``. Returns the (nnz, numel) the call's ACs used, ``None`` for MACs."""
    entry.calls += 1
    entry.dense_ops += ops
    nnz = _binary_nonzeros(x)
    if nnz is not None:
        entry.binary_calls += 1
        entry.binary_nonzeros += nnz
        entry.binary_elements += x.numel()
        spikes = (nnz, x.numel())
    elif chain is not None:
        entry.chained_calls += 1
        spikes = chain
    else:
        entry.macs += ops
        return None
    entry.ac_dense_ops += ops
    entry.input_nonzeros += spikes[0]
    entry.input_elements += spikes[1]
    entry.acs += ops * spikes[0] / spikes[1] if spikes[1] else 0.0
    return spikes


_MATMULS = {
    torch.matmul,
    torch.Tensor.matmul,
    torch.Tensor.__matmul__,
    torch.bmm,
    torch.Tensor.bmm,
    torch.mm,
    torch.Tensor.mm,
}


class _MatmulCounter(TorchFunctionMode):
    """Counts matmuls that happen outside the hooked layers, named after the innermost module
    that is running (``<module>.matmul<k>``, k = order within that module's call)."""

    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        c = self.counter
        if func in _MATMULS and c.layer_depth == 0 and len(args) >= 2:
            a, b = args[0], args[1]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                with torch._C.DisableTorchFunction():
                    c.record_matmul(a, b, out)
        return out


def _version(t: torch.Tensor) -> Optional[int]:
    """The in-place version counter (``None`` for inference-mode tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


class _Chains:
    """Outputs of layers that counted ACs, by identity: ``id -> (weakref, version, spikes)``.
    An entry matches only the same live object, not modified in place since it was produced
    (inference-mode tensors have no version counter: identity only)."""

    def __init__(self) -> None:
        self.outputs: Dict[int, Tuple[Any, Optional[int], Tuple[int, int]]] = {}

    def add(self, out: Any, spikes: Tuple[int, int]) -> None:
        if isinstance(out, torch.Tensor):
            self.outputs[id(out)] = (weakref.ref(out), _version(out), spikes)

    def get(self, x: torch.Tensor) -> Optional[Tuple[int, int]]:
        entry = self.outputs.get(id(x))
        if entry is None:
            return None
        ref, version, spikes = entry
        if ref() is not x or _version(x) != version:
            del self.outputs[id(x)]  # a new object under a reused id, or changed in place
            return None
        return spikes


class _Counter:
    def __init__(
        self,
        model: nn.Module,
        layer_types: Tuple[Type[nn.Module], ...],
        spike_input: SpikeInput = SpikeInput.STRICT,
    ) -> None:
        self.layers: Dict[str, LayerOps] = {}
        self.chains = _Chains() if spike_input is SpikeInput.LINEAR_CHAIN else None
        self.layer_depth = 0
        self.stack: List[Tuple[str, List[int]]] = []  # (module name, [matmul index])
        self.handles: List[Any] = []
        for name, m in model.named_modules():
            label = name or type(m).__name__
            self.handles.append(m.register_forward_pre_hook(self._enter(label)))
            self.handles.append(m.register_forward_hook(self._leave(label)))
            if isinstance(m, layer_types):
                self.layers[label] = LayerOps(label, type(m).__name__)
                self.handles.append(m.register_forward_pre_hook(self._layer_enter))
                self.handles.append(m.register_forward_hook(self._layer_hook(label)))

    def _enter(self, label: str) -> Callable:
        def hook(module, inputs):
            self.stack.append((label, [0]))

        return hook

    def _leave(self, label: str) -> Callable:
        def hook(module, inputs, output):
            if self.stack and self.stack[-1][0] == label:
                self.stack.pop()

        return hook

    def _layer_enter(self, module, inputs) -> None:
        self.layer_depth += 1

    def _layer_hook(self, label: str) -> Callable:
        def hook(module, inputs, output):
            self.layer_depth -= 1
            x = inputs[0]
            with torch._C.DisableTorchFunction():
                chain = None if self.chains is None else self.chains.get(x)
                spikes = _record(self.layers[label], x, dense_ops(module, output), chain)
                if spikes is not None and self.chains is not None:
                    self.chains.add(output, spikes)

        return hook

    def record_matmul(self, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
        owner, counter = self.stack[-1] if self.stack else ("<top>", [0])
        label = f"{owner}.matmul{counter[0]}"
        counter[0] += 1
        entry = self.layers.get(label)
        if entry is None:
            entry = self.layers[label] = LayerOps(label, "matmul")
        ops = out.numel() * a.shape[-1]
        x = a if _binary_nonzeros(a) is not None or _binary_nonzeros(b) is None else b
        _record(entry, x, ops)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _infer_batch(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return batch_of(x)  # [T, B, C, H, W] frames or [B, ...]
    raise ValueError("cannot infer the batch size from a non-tensor input; pass batch_size=")


def count_synops(
    model: nn.Module,
    x: Any,
    batch_size: Optional[int] = None,
    e_mac_pj: float = E_MAC_PJ,
    e_ac_pj: float = E_AC_PJ,
    layer_types: Sequence[Type[nn.Module]] = DEFAULT_LAYERS,
    count_matmul: bool = True,
    eval_mode: bool = True,
    spike_input: Union[SpikeInput, str] = SpikeInput.STRICT,
) -> EnergyReport:
    """Run ``model(x)`` once (eval mode, no grad) and count MACs / ACs per layer.

    Args:
        model: any ``nn.Module``; layers of ``layer_types`` (Conv1d/2d/3d, Linear and their
            subclasses) are hooked, and matmuls outside them are counted when ``count_matmul``.
        x: the input, passed as ``model(x)`` (real data for meaningful firing rates).
        batch_size: number of images in ``x``; per-image numbers divide by it. Defaults to
            ``x.shape[1]`` for 5-D time-first frames and ``x.shape[0]`` otherwise. Pass it
            explicitly when ``x`` is already folded as ``[T*B, ...]``.
        e_mac_pj, e_ac_pj: energy per MAC / AC in pJ (4.6 / 0.9 by default).
        eval_mode: run in ``model.eval()`` (restored afterwards).
        spike_input: which inputs count as spikes, a :class:`SpikeInput` or its value:
            ``"strict"`` (default: binary inputs only) or ``"linear_chain"``
            (also a layer fed directly by the output of a layer that counted ACs, at the rate
            of the spikes that started the chain -- the convention of published SNN energy
            figures). Recorded in the report.

    Returns an :class:`EnergyReport` (``.rows()`` per layer, ``.energy_mj`` per image).
    Layers that never ran are left out.
    """
    if batch_size is None:
        batch_size = _infer_batch(x)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    spike_input = SpikeInput.parse(spike_input)
    counter = _Counter(model, tuple(layer_types), spike_input)
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        with torch.no_grad():
            if count_matmul:
                with _MatmulCounter(counter):
                    model(x)
            else:
                model(x)
    finally:
        counter.remove()
        model.train(was_training)
    layers = [entry for entry in counter.layers.values() if entry.calls > 0]
    return EnergyReport(layers, batch_size, e_mac_pj, e_ac_pj, spike_input=spike_input)
