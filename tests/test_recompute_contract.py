"""The recompute contract (revsnn.reversible.recompute) on every registered family.

Every memory mode of every model equals ``none`` (plain autograd, float64) with parameter hooks
(fired once, same values, never ``None``), dropout in a module edited after construction,
``retain_graph`` followed by a second backward and ``autograd.grad``, frozen parameters,
channels_last and bf16 autocast; ``create_graph=True`` is exact or refused before anything is
accumulated. A new family is covered by registering its ``*_test`` variant.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from contract_helpers import (
    MODELS,
    assert_same,
    build,
    example,
    loss_of,
    max_rel,
    modes,
    outputs,
    rel,
    replace_module,
    step,
)
from revsnn.reversible.recompute import RecomputeError, first_order_reasons
from subproc import run_isolated

TOL = 1e-10


def _saving_modes(model):
    return [m for m in modes(model) if m != "none"]


@pytest.mark.parametrize("name", MODELS)
def test_every_mode_equals_none_and_hooks_fire_once(name):
    model = build(name)
    x = example(model)
    ref = step(model, "none", x, hooks=True)
    assert ref["calls"] and set(ref["calls"].values()) == {1}
    for mode in _saving_modes(model):
        got = step(model, mode, x, hooks=True)
        assert_same(got, ref, TOL, mode)  # the halving hooks ran once: grads equal
        assert got["calls"] == ref["calls"], mode  # every parameter's hook once per backward
        assert got["post"] == ref["post"], mode
        assert not got["nones"], (mode, got["nones"][:3])


@pytest.mark.parametrize("name", MODELS)
def test_dropout_in_a_classifier_edited_after_construction(name):
    model = build(name)
    x = example(model)

    def edit(m):
        clf = m.get_classifier()
        replace_module(m, clf, nn.Sequential(nn.Dropout(0.3), clf))

    ref = step(model, "none", x, edit=edit)
    for mode in _saving_modes(model):
        assert_same(step(model, mode, x, edit=edit), ref, TOL, mode)


@pytest.mark.parametrize("name", MODELS)
def test_retain_graph_second_backward_and_autograd_grad(name):
    model = build(name)
    x0 = example(model)

    def run(mode):
        m = copy.deepcopy(model).set_memory_mode(mode)
        x = x0.clone().requires_grad_(True)
        params = [p for p in m.parameters() if p.requires_grad]
        torch.manual_seed(5)
        feats = m.forward_features(x) if hasattr(m, "forward_features") else None
        outs = [m.head(feats)] if feats is not None else outputs(m, x)
        loss = loss_of(outs)
        loss.backward(retain_graph=True)
        first = [p.grad.clone() for p in params]
        wrt = [x] + ([feats] if feats is not None else []) + params
        again = torch.autograd.grad(loss, wrt, retain_graph=True, allow_unused=True)
        loss.backward()
        second = [p.grad for p in params]
        return first, again, second

    ref = run("none")
    for mode in _saving_modes(model):
        first, again, second = run(mode)
        for a, b in zip(first, ref[0]):
            assert rel(a, b) <= TOL or float((a - b).abs().max()) < 1e-12, mode
        for a, b in zip(again, ref[1]):
            assert (a is None) == (b is None), mode
            if b is not None:
                assert rel(a, b) <= TOL or float((a - b).abs().max()) < 1e-12, mode
        for a, b in zip(second, ref[2]):
            assert rel(a, b) <= TOL or float((a - b).abs().max()) < 1e-12, mode


@pytest.mark.parametrize("name", MODELS)
def test_frozen_parameters(name):
    model = build(name)
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 3 != 1)
    x = example(model)
    ref = step(model, "none", x)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not frozen & set(ref["grads"])
    for mode in _saving_modes(model):
        got = step(model, mode, x)
        assert_same(got, ref, TOL, mode)


@pytest.mark.parametrize("name", MODELS)
def test_create_graph_is_exact_or_refused_before_anything_is_accumulated(name):
    model = build(name)
    x0 = example(model)
    for mode in modes(model):
        m = copy.deepcopy(model).set_memory_mode(mode)
        x = x0.clone().requires_grad_(True)
        loss = loss_of(outputs(m, x))
        if first_order_reasons(m):
            with pytest.raises(RecomputeError, match="create_graph"):
                loss.backward(create_graph=True)
            assert all(p.grad is None for p in m.parameters()), mode
            assert x.grad is None
        else:  # plain autograd: a gradient penalty runs and its gradient is finite
            params = [p for p in m.parameters() if p.requires_grad]
            gs = torch.autograd.grad(loss, params, create_graph=True)
            sum(g.square().sum() for g in gs).backward()
            assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


def _to_channels_last(m):
    m.to(memory_format=torch.channels_last)


def channels_last_equals_contiguous(name: str) -> None:
    model = build(name)
    x = example(model).contiguous(memory_format=torch.channels_last)
    ref = step(model, "none", x.contiguous())
    for mode in modes(model):
        got = step(model, mode, x, edit=_to_channels_last)
        assert_same(got, ref, TOL, f"channels_last {mode}")


@pytest.mark.parametrize("name", MODELS)
def test_channels_last_equals_contiguous_in_every_mode(name):
    """In a child (tests/subproc.py): channels_last crosses native kernels in an unusual
    layout, where a native crash must fail this test, not end the test run."""
    run_isolated("from test_recompute_contract import channels_last_equals_contiguous\n"
                 f"channels_last_equals_contiguous({name!r})", what=f"channels_last {name}")


@pytest.mark.parametrize("name", MODELS)
def test_bf16_autocast_equals_none_under_the_same_autocast(name):
    """Forward under bf16 autocast, backward outside it. Every mode computes the same forward
    and input gradient. Parameter gradients equal plain autograd's to float32 rounding when
    autocast's weight cache is off; with the cache (the default), plain autograd casts a
    parameter used by several recomputed parts (T-RevSNN's shared level tails) once and sums
    its gradient in bf16, a recomputation casts it once per part and sums in float32, so those
    gradients agree to bf16 precision only."""
    model = build(name, dtype=torch.float32)
    x = example(model, dtype=torch.float32)
    for cache, tol in ((False, 1e-5), (True, 1e-2)):
        ref = step(model, "none", x, autocast=torch.bfloat16, autocast_cache=cache)
        for mode in _saving_modes(model):
            got = step(model, mode, x, autocast=torch.bfloat16, autocast_cache=cache)
            for a, b in zip(got["outs"], ref["outs"]):
                assert torch.equal(a, b), mode  # the forward is the same computation
            assert rel(got["dx"], ref["dx"]) <= 1e-5, (mode, rel(got["dx"], ref["dx"]))
            err = max_rel(got["grads"], ref["grads"])
            assert err <= tol, (mode, cache, err)
