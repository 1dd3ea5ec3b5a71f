"""The memory planner (revsnn.plan): mixed per-part plans equal plain autograd on every family,
the cost model against the exact CPU tracker, the solver against brute force, the command line."""

from __future__ import annotations

import itertools
import json
import math
import random
import time

import pytest
import torch
from torch import nn

from contract_helpers import MODELS, assert_same, build, example, step
from revsnn import MemoryMode, plan
from revsnn.cli import main as revsnn_main
from revsnn.models.base import SpikingModel
from revsnn.models.blocks import ConvBranch, neuron_factory
from revsnn.plan.cost import Lin, Profile, bwd_key, fwd_key, predict
from revsnn.plan.parts import GLUE, configurations
from revsnn.reversible import RevCoupling, ReversibleSequence
from revsnn.reversible.part import RecomputedPart
from revsnn.units import parse_bytes

TOL = 1e-10


# ------------------------------------------------------------------ mixed plans equal none
def _mixed_plans(model):
    """Two plans giving neighbouring parts different modes (shifted by one)."""
    parts = model.parts()
    out = []
    for shift in (0, 1):
        p = {}
        for i, (name, part) in enumerate(parts.items()):
            modes = plan.parts.part_modes(part)
            p[name] = modes[(i + shift) % len(modes)]
        out.append(p)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_mixed_plans_equal_none_in_float64(name):
    model = build(name)
    x = example(model)
    ref = step(model, "none", x, hooks=True)
    for p in _mixed_plans(model):
        got = step(model, p, x, hooks=True)
        assert_same(got, ref, TOL, str(p))
        assert got["calls"] == ref["calls"], p  # every parameter's hook once per backward
        assert not got["nones"], p
        m = build(name).set_memory_mode(p)
        assert m.memory_plan() == p


@pytest.mark.parametrize("name", MODELS)
def test_every_family_is_planned_and_its_plan_measures_as_predicted(name):
    model = build(name, dtype=torch.float32)
    x = example(model, batch=4, dtype=torch.float32)
    prof = plan.profile(model, x, rounds=1, batches=(2, 4))
    assert set(prof.order) | set(prof.idle) == set(model.parts())
    lean = plan.least_peak(prof, 4)
    full = predict(prof, {n: "none" for n in prof.order}, 4)
    sol = plan.solve(prof, 4, (lean.predicted_peak_bytes + full.peak_bytes) / 2)
    assert sol.fits
    got = plan.measure_plan(model.set_memory_mode(sol.modes), sol.modes, x, rounds=1)
    assert abs(got["peak_bytes"] / sol.predicted_peak_bytes - 1) <= 0.02, sol.modes


def test_configurations_cover_every_pair_of_neighbouring_modes():
    order = ["a", "b", "c", "d", "e"]
    modes = {"a": ["none", "checkpoint", "reversible"], "b": ["none", "checkpoint"],
             "c": ["none", "checkpoint", "reversible"], "d": ["none", "checkpoint", "reversible"],
             "e": ["none"]}
    plans = configurations(order, modes)
    assert len(plans) <= 9
    for u, v in zip(order, order[1:]):
        seen = {(p[u], p[v]) for p in plans}
        assert seen == set(itertools.product(modes[u], modes[v])), (u, v)


# ------------------------------------------------------------------ the cost model, measured
def _plans_of(prof, k, seed=0):
    every = list(plan.all_plans(prof))
    random.Random(seed).shuffle(every)
    return every[:k]


@pytest.mark.parametrize("name", ["revsformer_test"])
def test_predicted_peak_matches_the_exact_tracker(name):
    torch.manual_seed(0)
    model = build(name, dtype=torch.float32)
    x = torch.randn(4, model.in_channels, 8, 8)
    prof = plan.profile(model, x, rounds=1)
    assert prof.meta["chain"] and prof.order == list(prof.modes)
    plans = {str(i): p for i, p in enumerate(_plans_of(prof, 3))}
    for B in (4, 6):  # the profiled batch and one beyond the two profiled ones
        xb = torch.randn(B, model.in_channels, 8, 8)
        got = plan.measure_plans(model, plans, xb, rounds=1, warmup=0)
        for k, p in plans.items():
            pred = predict(prof, p, B)
            err = pred.peak_bytes / got[k]["peak_bytes"] - 1
            assert abs(err) <= 0.02, (B, p, err)


def test_profile_keeps_a_single_mode_a_single_mode():
    model = build("ms_resnet_test", dtype=torch.float32).set_memory_mode("checkpoint")
    plan.profile(model, torch.randn(2, 3, 8, 8), rounds=1)
    assert model.memory_mode is MemoryMode.CHECKPOINT


def test_profile_restores_the_model():
    model = build("ms_resnet_test", dtype=torch.float32)
    model.set_memory_mode({"layers.0": "none", "*": "checkpoint"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = model.memory_plan()
    plan.profile(model, torch.randn(4, 3, 8, 8), rounds=1)
    assert model.memory_plan() == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ the solver, exact
def _random_profile(rng: random.Random, n_parts: int) -> Profile:
    """Random terms for every key the cost model can ask for (any plan)."""
    order = [f"p{i}" for i in range(n_parts)]
    modes = {n: rng.choice([["none", "checkpoint"], ["none", "checkpoint", "reversible"],
                            ["none", "reversible"]]) for n in order}
    n = n_parts + 2
    unit_modes = [[GLUE]] + [modes[o] for o in order] + [[GLUE]]
    G, Tf, E, Tb = ([{} for _ in range(n)] for _ in range(4))
    times = {k: [{m: rng.uniform(0.01, 0.2) for m in unit_modes[u]} for u in range(n)]
             for k in ("wall", "cpu")}
    for u in range(n):
        # the keys of unit u involve units u-1 .. u+1 (and N-1, N): enumerate those only
        near = sorted({max(0, u - 1), u, min(n - 1, u + 1), max(0, n_parts - 1), n_parts})
        base = [m[0] for m in unit_modes]
        for combo in itertools.product(*(unit_modes[i] for i in near)):
            seq = list(base)
            for i, m in zip(near, combo):
                seq[i] = m
            kf, kb = fwd_key(u, seq), bwd_key(u, seq)
            G[u].setdefault(kf, Lin(rng.uniform(0, 1e3), rng.uniform(0, 1e4)))
            Tf[u].setdefault(kf, Lin(rng.uniform(0, 1e3), rng.uniform(0, 5e3)))
            E[u].setdefault(kb, Lin(rng.uniform(-1e3, 1e3), rng.uniform(-5e3, 5e3)))
            Tb[u].setdefault(kb, Lin(rng.uniform(0, 1e3), rng.uniform(0, 1e4)))
    return Profile(order=order, modes=modes, batches=(2, 4), time_batch=4,
                   fixed=Lin(5e4, 100.0), G=G, Tf=Tf, E=E, Tb=Tb,
                   opt_peak=Lin(rng.uniform(0, 1e3), 0.0), times=times,
                   time_rest={"wall": 0.05, "cpu": 0.05})


@pytest.mark.parametrize("seed", range(20))
def test_solve_is_optimal_against_brute_force(seed):
    rng = random.Random(seed)
    prof = _random_profile(rng, rng.randint(1, 6))
    B = rng.choice([1, 4, 16])
    preds = [predict(prof, p, B) for p in plan.all_plans(prof)]
    peaks = sorted(p.peak_bytes for p in preds)
    for budget in (peaks[0] * 0.9, peaks[0], peaks[len(peaks) // 3], peaks[-1] * 1.1):
        sol = plan.solve(prof, B, budget)
        again = predict(prof, sol.modes, B)
        assert math.isclose(sol.predicted_peak_bytes, again.peak_bytes)
        assert math.isclose(sol.predicted_step_s, again.step_s)
        feasible = [p for p in preds if p.peak_bytes <= budget]
        if feasible:
            assert sol.fits and sol.predicted_peak_bytes <= budget
            best = min(p.step_s for p in feasible)
            assert sol.predicted_step_s <= best * (1 + 1e-12)
            assert sol.shortfall_bytes == 0
        else:  # says exactly how far the leanest plan is from fitting
            assert not sol.fits
            assert math.isclose(sol.predicted_peak_bytes, peaks[0])
            assert math.isclose(sol.shortfall_bytes, peaks[0] - budget)
            assert "more" in sol.message


def test_seventeen_parts_are_solved_without_enumerating_plans():
    prof = _random_profile(random.Random(7), 17)  # 2**17 .. 3**17 plans
    lean = plan.least_peak(prof, 16)
    for budget in (lean.predicted_peak_bytes * 0.99, lean.predicted_peak_bytes * 1.2):
        t0 = time.perf_counter()
        sol = plan.solve(prof, 16, budget)
        assert time.perf_counter() - t0 < 5.0
        again = predict(prof, sol.modes, 16)
        assert math.isclose(again.peak_bytes, sol.predicted_peak_bytes)
        assert sol.fits == (budget >= lean.predicted_peak_bytes)
        if sol.fits:
            assert sol.predicted_peak_bytes <= budget
            # no single-part change of the plan is faster and still fits (local optimality)
            for name in prof.order:
                for m in prof.modes[name]:
                    other = predict(prof, {**sol.modes, name: m}, 16)
                    assert other.peak_bytes > budget or other.step_s >= sol.predicted_step_s


def test_max_batch_is_the_largest_that_fits():
    prof = _random_profile(random.Random(3), 4)
    budget = predict(prof, {n: prof.modes[n][0] for n in prof.order}, 40).peak_bytes
    sol = plan.max_batch(prof, budget)
    assert sol.fits and sol.predicted_peak_bytes <= budget
    assert not plan.least_peak(prof, sol.batch_size + 1, budget).fits
    with pytest.raises(ValueError, match="not even batch 1 fits"):
        plan.max_batch(prof, 10.0)


def test_profile_round_trips_through_json():
    prof = _random_profile(random.Random(1), 3)
    again = Profile.from_dict(json.loads(json.dumps(prof.to_dict())))
    p = {n: prof.modes[n][-1] for n in prof.order}
    assert predict(again, p, 8).peak_bytes == predict(prof, p, 8).peak_bytes
    assert predict(again, p, 8).step_s == predict(prof, p, 8).step_s


@pytest.mark.parametrize("text,expected", [
    ("8GiB", 8 << 30), ("512 MiB", 512 << 20), ("1.5G", int(1.5 * (1 << 30))),
    ("8GB", 8 * 10**9), ("100kb", 10**5), ("4096", 4096), (1024, 1024),
])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "8XB", "-1GiB", "0", "GiB", "8 Gib x"])
def test_parse_bytes_refuses(text):
    with pytest.raises(ValueError):
        parse_bytes(text)


# ------------------------------------------------------------------ user models
class _UserNet(SpikingModel):
    """A user model from the public blocks: a recomputed stem, a reversible sequence."""

    def __init__(self, num_classes=10, T=2, in_channels=3, memory_mode="none"):
        super().__init__(num_classes, T, in_channels, memory_mode)
        nf = neuron_factory("if")
        self.stem = _Stem(in_channels, 8)
        self.body = ReversibleSequence(
            [RevCoupling(ConvBranch(4, nf), ConvBranch(4, nf)) for _ in range(2)])
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x, _ = self.check_input(x)
        z = self.body(self.stem(x).unsqueeze(0).expand(self.T, -1, -1, -1, -1))
        return self.fc(z.mean(dim=(0, 3, 4)))


class _Stem(RecomputedPart):
    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)

    def body(self, x):
        return self.bn(self.conv(x))

    def forward(self, x):
        return self.run(x)


class _PlainUserNet(nn.Module):
    """Not a SpikingModel: its parts' modes are set directly."""

    def __init__(self):
        super().__init__()
        nf = neuron_factory("if")
        self.seq = ReversibleSequence([RevCoupling(ConvBranch(4, nf), ConvBranch(4, nf))])
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.seq(x.unsqueeze(0).repeat(2, 1, 1, 1, 1)).mean(dim=(0, 3, 4)))


@pytest.mark.parametrize("cls", [_UserNet, _PlainUserNet])
def test_user_models_from_public_blocks(cls):
    torch.manual_seed(0)
    model = cls()
    c = 3 if cls is _UserNet else 8
    x = torch.randn(4, c, 8, 8)
    prof = plan.profile(model, x, rounds=1)
    lean = plan.least_peak(prof, 4)
    full = predict(prof, {n: "none" for n in prof.order}, 4)
    sol = plan.solve(prof, 4, (lean.predicted_peak_bytes + full.peak_bytes) / 2)
    assert sol.fits
    plan.parts.apply_modes(model, sol.modes)
    assert plan.parts.memory_plan(model) == sol.modes
    got = plan.measure_plan(model, sol.modes, x, rounds=1, warmup=0)
    assert abs(got["peak_bytes"] / sol.predicted_peak_bytes - 1) < 0.02


def test_a_part_run_twice_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = _Stem(3, 4)

        def forward(self, x):
            return self.stem(x).mean() + self.stem(x).mean()

    with pytest.raises(ValueError, match="ran more than once"):
        plan.profile(Twice(), torch.randn(2, 3, 4, 4), loss_fn=lambda out, y: out, rounds=1)


def test_a_model_without_parts_is_refused():
    with pytest.raises(ValueError, match="no parts with a memory mode"):
        plan.profile(nn.Linear(3, 2), torch.randn(2, 3))


# ------------------------------------------------------------------ command line
PLAN = ["plan", "--model", "ms_resnet_test", "--batch", "4", "--rounds", "1"]


def test_cli_json_round_trips_into_set_memory_mode(capsys):
    rc = revsnn_main(PLAN + ["--budget", "1MiB", "--json", "--repeats", "1"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["fits"]
    assert out["predicted_peak_bytes"] <= out["budget_bytes"] == 1 << 20
    assert out["measured_peak_bytes"] > 0 and out["predicted_step_s"] > 0
    model = build("ms_resnet_test").set_memory_mode(out["modes"])
    assert model.memory_plan() == out["modes"]


def test_cli_table_and_a_budget_nothing_fits(capsys):
    rc = revsnn_main(PLAN + ["--budget", "1MiB", "--no-measure"])
    text = capsys.readouterr().out
    assert rc == 0 and "layers.0" in text and "extra ms" in text and "predicted" in text
    rc = revsnn_main(PLAN + ["--budget", "20KiB", "--json", "--no-measure"])
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert rc == 1 and not out["fits"] and out["shortfall_bytes"] > 0
    assert out["predicted_peak_bytes"] - out["shortfall_bytes"] == out["budget_bytes"]
    assert "no plan fits" in cap.err and len(cap.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,needle", [
    (["--model", "revs_resnet_test", "--batch", "4", "--budget", "8XB"], "cannot read the memory"),
    (["--model", "revs_resnet_tst", "--batch", "4", "--budget", "1GiB"], "did you mean"),
    (["--model", "revs_resnet_test", "--batch", "0", "--budget", "1GiB"], "--batch must be >= 1"),
    (["--model", "revs_resnet_test", "--batch", "4"], "required: --budget"),
    (["--model", "revs_resnet_test", "--budget", "1GiB"], "one of the arguments --batch"),
    (["--model", "revs_resnet_test", "--batch", "4", "--budget", "1GiB", "--device", "tpu"],
     "unknown device"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys):
    assert revsnn_main(["plan"] + argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_cli_help(capsys):
    assert revsnn_main(["plan", "--help"]) == 0
    assert "--budget" in capsys.readouterr().out


# ------------------------------------------------------------------ revsnn train
TRAIN = ["train", "--model", "revs_resnet_test", "--T", "2", "--epochs", "1", "--batch-size",
         "8", "--set", "max_steps=1", "--set", "measure_memory=false"]


def test_train_applies_a_plan_and_finds_the_largest_batch(tmp_path, capsys):
    out = tmp_path / "run"
    assert revsnn_main(TRAIN + ["--memory-budget", "1MiB", "--max-batch", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    text = capsys.readouterr().out
    assert "memory plan for 1.0 MiB" in text and summary["memory_mode"] == "plan"
    assert summary["batch_size"] > 8  # 1 MiB holds more than the 8 asked for
    model = build("revs_resnet_test").set_memory_mode(summary["memory_plan"])
    assert model.memory_plan() == summary["memory_plan"]


def test_train_with_a_budget_nothing_fits_is_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert revsnn_main(TRAIN + ["--memory-budget", "16KiB", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no plan fits" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert revsnn_main(TRAIN + ["--max-batch"]) == 2
    assert "--max-batch needs --memory-budget" in capsys.readouterr().err
