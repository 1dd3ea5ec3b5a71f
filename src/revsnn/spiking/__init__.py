"""Spiking primitives: surrogate spikes, stateless multi-step neurons, time-folding layers."""

from .layers import TimeFold, WSConv2d, repeat_time
from .neuron import (
    IF,
    LIF,
    PLIF,
    BaseNeuron,
    StatelessSpike,
    fire_and_reset,
    if_step,
    lif_step,
    multi_step,
    stateless_spike,
)
from .pointwise import GuardedConv2d
from .surrogate import ATan, Rectangle, Sigmoid, Surrogate, get_surrogate, heaviside

__all__ = [
    "ATan",
    "BaseNeuron",
    "GuardedConv2d",
    "IF",
    "LIF",
    "PLIF",
    "Rectangle",
    "Sigmoid",
    "StatelessSpike",
    "Surrogate",
    "TimeFold",
    "WSConv2d",
    "fire_and_reset",
    "get_surrogate",
    "heaviside",
    "if_step",
    "lif_step",
    "multi_step",
    "repeat_time",
    "stateless_spike",
]
