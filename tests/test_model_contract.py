"""The model contract, for every registered model (no per-family test code): registry metadata,
constructor validation, parameter names independent of the memory modes, classifier verbs, one
clear error for an unsupported mode, per-part plans, and the ``revsnn models`` command."""

from __future__ import annotations

import json

import pytest
import torch

import revsnn
from revsnn.cli import main as cli_main
from revsnn.models.base import SpikingModel

ALL = revsnn.list_models()
TINY = revsnn.list_models("*_test")


def _meta(name, **kw):
    with torch.device("meta"):
        return revsnn.create_model(name, **kw)


@pytest.mark.parametrize("name", ALL)
def test_metadata_and_the_common_arguments(name):
    info = revsnn.model_info(name)
    assert info.name == name and info.family in revsnn.families() and info.paper
    assert info.description and info.input in ("image", "image+frames", "frames")
    assert info.default_memory_mode in info.memory_modes
    m = _meta(name)
    assert isinstance(m, SpikingModel)
    assert (m.num_classes, m.T, m.in_channels) == (info.num_classes, info.T, info.in_channels)
    assert m.memory_mode.value == info.default_memory_mode
    assert tuple(mode.value for mode in m.supported_modes) == info.memory_modes
    m = _meta(name, num_classes=7, T=info.T + 1, in_channels=info.in_channels)
    assert (m.num_classes, m.T) == (7, info.T + 1)


@pytest.mark.parametrize("name", ALL)
def test_bad_constructor_arguments_are_one_clear_value_error(name):
    for bad in (dict(num_classes=0), dict(T=0), dict(T=1.5), dict(in_channels=-1)):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            _meta(name, **bad)
    with pytest.raises(ValueError, match="does not take the argument"):
        _meta(name, no_such_argument=1)
    with pytest.raises(ValueError, match="unknown memory mode"):
        _meta(name, memory_mode="fast")


@pytest.mark.parametrize("name", ALL)
def test_parameter_names_do_not_depend_on_the_memory_mode(name):
    m = _meta(name)
    keys = list(m.state_dict())
    for mode in m.supported_modes:
        m.set_memory_mode(mode)
        assert list(m.state_dict()) == keys
        assert m.memory_mode is mode
        assert set(m.memory_plan()) == set(m.parts())
    unsupported = [mode for mode in revsnn.MemoryMode if mode not in m.supported_modes]
    for mode in unsupported:
        with pytest.raises(ValueError, match=f"does not support memory_mode='{mode.value}'"):
            m.set_memory_mode(mode)


@pytest.mark.parametrize("name", ALL)
def test_per_part_plans(name):
    m = _meta(name)
    parts = list(m.parts())
    assert parts, "every model names its parts"
    plan = {"*": "none", parts[0]: m.supported_modes[-1].value}
    m.set_memory_mode(plan)
    assert m.memory_plan()[parts[0]] == m.supported_modes[-1].value
    assert all(v == "none" for k, v in m.memory_plan().items() if k != parts[0])
    with pytest.raises(ValueError, match="match no part"):
        m.set_memory_mode({"no_such_part": "none", "*": "none"})
    with pytest.raises(ValueError, match="no memory mode for part"):
        m.set_memory_mode({parts[0]: "none"} if len(parts) > 1 else {"x*": "none"})


@pytest.mark.parametrize("name", TINY)
def test_classifier_verbs(name):
    torch.manual_seed(0)
    m = revsnn.create_model(name).eval()
    info = revsnn.model_info(name)
    x = torch.randn(2, m.in_channels, info.image_size, info.image_size)
    if info.input == "frames":
        x = x.unsqueeze(0).expand(m.T, *x.shape).contiguous()
    assert isinstance(m.get_classifier(), torch.nn.Module)
    body = {k: v.clone() for k, v in m.state_dict().items()
            if not k.startswith(m.head_name + ".")}
    m.reset_classifier(5)
    assert m.num_classes == 5
    with torch.no_grad():
        assert m(x).shape == (2, 5)
        assert all(h.shape == (2, 5) for h in m.forward_heads(x))
    for k, v in body.items():  # only the head changed
        assert torch.equal(m.state_dict()[k], v), k
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        m.reset_classifier(0)


def test_revsnn_models_command(capsys):
    assert cli_main(["models", "revs_resnet*"]) == 0
    out = capsys.readouterr().out
    assert "| revs_resnet37 | revsnn | 23,510,154 | image+frames | 4 |" in out
    assert cli_main(["models", "--family", "trevsnn", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(revsnn.list_models(family="trevsnn"))
    tiny = next(r for r in rows if r["name"] == "trevsnn_tiny")
    assert tiny["parameters"] == 17_203_856 and tiny["input"] == "image"
    assert cli_main(["models", "no_such_*"]) == 1
    assert "no model matches 'no_such_*'" in capsys.readouterr().err
    assert cli_main(["models", "--family", "nope"]) == 2
    assert cli_main(["models", "--help"]) == 0
    assert "memory modes" in capsys.readouterr().out
