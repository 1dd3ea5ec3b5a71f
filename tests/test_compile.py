"""``torch.compile`` (inductor) on the registered families: compiled training equals eager, the
compute of every unit is one graph, the engines' recomputations run compiled units, the
contract's checks still refuse under compile, and ``--compile`` / ``fit(compile=True)``.

The compile-heavy parts run in one subprocess each (tests/compile_worker.py) with the inductor
cache in the test's temporary folder. Inductor builds C++ for every graph, which takes minutes
on a small shared machine, so the inductor training check covers one model per engine:
``revs_resnet_test`` reversible (reversible sequence, recomputed stem and downsampling bodies
with bool-packed spikes), ``trevsnn_test`` reversible (temporal columns, weight
standardisation) and ``revmlp_test`` checkpoint (the checkpoint mode); the graph-structure check
(``torch._dynamo.explain``, no code generation) covers one model of every family, plus the
whole-model graph of ``none`` mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import revsnn
from revsnn.models.compile import compile_problem, compile_units
from revsnn.reversible.recompute import RecomputeError

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
TOL = 1e-5
ENGINE_BREAK = "Skip inlining `torch.compiler.disable()`d function"

needs_cxx = pytest.mark.skipif(compile_problem("cpu") is not None,
                               reason=f"inductor cannot build here: {compile_problem('cpu')}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One inductor cache for the module's workers (the fit run reuses the training graphs)."""
    return tmp_path_factory.mktemp("inductor")


def _worker(kind: str, cases, cache: Path, timeout: int = 1800):
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join([str(SRC), str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(HERE / "compile_worker.py"), kind, *cases],
                       capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------- training
TRAIN_CASES = ["revs_resnet_test:reversible", "trevsnn_test:reversible", "revmlp_test:checkpoint"]


@needs_cxx
def test_compiled_training_step_equals_eager_and_recomputes_compiled(cache):
    results = _worker("train", TRAIN_CASES, cache)
    assert [f"{r['model']}:{r['mode']}" for r in results] == TRAIN_CASES
    for r in results:
        case = f"{r['model']}:{r['mode']}"
        assert r["loss"][0] == pytest.approx(r["loss"][1], rel=TOL), case
        assert r["n_grads"] > 0 and r["grad_missing"] == 0, case
        assert r["grad_rel"] <= TOL, (case, r["grad_rel"])
        assert r["buffer_rel"] <= TOL, (case, r["buffer_rel"])
        eager, compiled = r["recomputes"]
        assert eager == compiled, case  # the same recomputations ran
        if r["mode"] == "checkpoint":  # torch.utils.checkpoint replays compiled units
            assert r["compiled_in_backward"] > 0, (case, r)
        if r["mode"] == "reversible":
            # Every recomputation in the backward ran compiled units (the branch graphs were
            # compiled in place, so the backward's replay runs them, not eager ops).
            assert eager > 0 and r["compiled_in_backward"] >= eager, (case, r)


# ----------------------------------------------------------------------------- graphs
def _of_the_library(info) -> bool:
    """A model of revsnn itself (other tests register models of their own in this process)."""
    return info.cls.__module__.startswith("revsnn.")


def _explain_cases():
    """One model per family (reversible where it has the mode, else none) and revs_resnet_test
    in none mode (the whole network as one graph)."""
    cases, families = [], set()
    for name in revsnn.list_models("*_test"):
        info = revsnn.model_info(name)
        if info.family in families or not _of_the_library(info):
            continue
        families.add(info.family)
        cases.append(f"{name}:{'reversible' if 'reversible' in info.memory_modes else 'none'}")
    return cases + ["revs_resnet_test:none"]


def test_every_unit_is_one_graph_and_engines_are_the_only_breaks(cache):
    cases = _explain_cases()
    results = {f"{r['model']}:{r['mode']}": r for r in _worker("explain", cases, cache)}
    assert sorted(results) == sorted(cases)
    infos = map(revsnn.model_info, revsnn.list_models("*"))
    library = {i.family for i in infos if _of_the_library(i)}
    assert {revsnn.model_info(c.split(":")[0]).family for c in cases} == library
    for case, r in results.items():
        assert r["units"], case
        assert not r["not_called"], (case, r["not_called"])
        bad = {n: gb for n, gb in r["units"].items() if gb != [1, 0]}
        assert not bad, (case, bad)  # [graphs, breaks] per unit
        # The whole model: none mode is one graph; elsewhere the only breaks are the engines.
        if r["mode"] == "none" and case.startswith("revs_resnet_test"):
            assert (r["model_graphs"], r["model_breaks"]) == (1, 0), (case, r)
        assert set(r["model_break_reasons"]) <= {ENGINE_BREAK}, (case, r)
        if r["mode"] == "reversible":  # the engine is where the graph stops
            assert r["model_break_reasons"] == [ENGINE_BREAK], case


def test_units_cover_branches_levels_heads():
    m = revsnn.create_model("revs_resnet_test")
    names = list(compile_units(m))
    assert "stages.0.blocks.0.f" in names and "stages.0.blocks.0.g" in names and "head" in names
    t = revsnn.create_model("trevsnn_test")
    assert "columns.levels.0.0" in compile_units(t) and "heads.0" in compile_units(t)


# ----------------------------------------------------------------------------- contract
@needs_cxx
def test_compiled_spike_conv_still_refuses_non_binary_input(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    from revsnn.spiking.binary import SpikeConv2d

    torch.manual_seed(0)
    conv = SpikeConv2d(2, 2, 3, padding=1)
    bad = torch.full((1, 2, 4, 4), 0.5, requires_grad=True)
    with pytest.raises(ValueError, match="expects binary spikes"):
        conv(bad)  # eager
    compiled = torch.compile(conv, fullgraph=True, dynamic=False)  # no graph break allowed
    good = torch.randint(0, 2, (1, 2, 4, 4)).float().requires_grad_(True)
    compiled(good).sum().backward()
    ref = good.detach().clone().requires_grad_(True)
    conv(ref).sum().backward()
    assert torch.allclose(good.grad, ref.grad, rtol=TOL, atol=1e-6)
    with pytest.raises(RuntimeError, match="expects binary spikes"):
        compiled(bad)
    torch._dynamo.reset()


class _Hidden(nn.Module):
    """Keeps a membrane between calls without reset(): recomputing it would differ."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.v = torch.zeros(4)

    def forward(self, x):
        self.v = self.v + 1
        return self.lin(x) + self.v


def test_compiled_model_still_refuses_hidden_state_in_a_recomputed_part():
    from revsnn.reversible import RevCoupling, ReversibleSequence

    for mode in ("reversible", "checkpoint"):
        seq = ReversibleSequence([RevCoupling(_Hidden(), nn.Linear(4, 4))], memory_mode=mode)
        x = torch.randn(2, 3, 8, requires_grad=True)
        with pytest.raises(RecomputeError, match="changed 'v'"):
            seq(x)  # eager
        compiled = torch.compile(seq, backend="eager")
        with pytest.raises(RecomputeError, match="changed 'v'"):
            compiled(x)
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- train
@needs_cxx
def test_fit_compile_reports_compile_time_apart(cache):
    (r,) = _worker("fit", ["revs_resnet_test:reversible"], cache)
    assert r["status"] == "finished"
    assert r["compile_time_s"] > 0
    epoch = next(line for line in r["lines"] if line.startswith("epoch"))
    assert "s compiling)" in epoch


@pytest.mark.parametrize("env", [{"CXX": "/nonexistent/c++"}, {"PATH": "", "CXX": ""}])
def test_train_compile_without_a_compiler_is_one_line_exit_2(tmp_path, env):
    script = ("import sys; from revsnn.train.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run(
        [sys.executable, "-c", script, "--model", "revmlp_test", "--epochs", "1", "--compile",
         "--out", str(tmp_path / "run"), "--set", "max_steps=1"],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=str(SRC), **env))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "C++ compiler" in lines[0] and "--compile" in lines[0]
    assert not (tmp_path / "run").exists()
