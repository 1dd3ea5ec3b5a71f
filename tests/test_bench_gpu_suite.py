"""benchmarks/gpu_suite.py --device cpu --smoke: every section (and so every benchmark script it
calls) runs on tiny models and writes its results file, so the GPU suite cannot rot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from revsnn.bench.results import read_results
from subproc import run_isolated

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The suite in a child (tests/subproc.py): its checks cross native kernels in unusual
    layouts, where a native crash must fail these tests, not end the test run."""
    out = tmp_path_factory.mktemp("gpu_suite")
    run_isolated(argv=[str(BENCHMARKS / "gpu_suite.py"), "--device", "cpu", "--smoke", "--out",
                       str(out)], timeout=1500, what="gpu_suite.py --device cpu --smoke")
    return out


def _finite(v) -> bool:
    return not isinstance(v, float) or math.isfinite(v)


def test_every_section_writes_a_results_file_with_provenance(smoke):
    for name in ("claims", "revsnn", "trevsnn", "pararevsnn", "fsdp", "compile", "checks"):
        doc = read_results(smoke / f"{name}_cpu.json")
        prov = doc["provenance"]
        # the command that reproduces the file: the section's own script with the suite's options
        script = {"checks": "gpu_suite", "claims": "claims"}.get(name, f"bench_{name}")
        assert f"benchmarks/{script}.py" in prov["command"], (name, prov["command"])
        assert "--device cpu" in prov["command"], name
        assert prov["torch"] == torch.__version__ and prov["device"] == "cpu"
        assert doc["rows"] and doc["tables"], name
        assert all(_finite(v) for r in doc["rows"] for v in r.values()), name


def test_smoke_numbers_have_the_expected_shape(smoke):
    claims = read_results(smoke / "claims_cpu.json")["rows"]
    assert {r["id"] for r in claims} >= {"revsresnet37-memory", "trevsnn-time",
                                         "trevsnn-energy"}
    assert all(r["measured"] != "skipped" and r["ratios"] for r in claims)
    rev = {r["mode"]: r for r in read_results(smoke / "revsnn_cpu.json")["rows"]}
    assert set(rev) == {"none", "checkpoint", "reversible"}
    assert rev["reversible"]["mib_1_2"] < rev["none"]["mib_1_2"]
    assert all("step_vs_none_cpu" in r for r in rev.values())
    trev = read_results(smoke / "trevsnn_cpu.json")
    assert {r["kind"] for r in trev["rows"]} == {"none", "checkpoint", "reversible", "bptt"}
    assert {r["kind"] for r in trev["time_rows"]} == {"none", "checkpoint", "reversible", "bptt"}
    para = read_results(smoke / "pararevsnn_cpu.json")["rows"]
    assert [r["kind"] for r in para] == ["revsresnet", "pararevsnn_pair"]
    assert all("infer_vs_revsresnet" in r and "mib_1_2" in r for r in para)
    comp = read_results(smoke / "compile_cpu.json")["rows"]
    assert [(r["mode"], r["batch"]) for r in comp] == [("reversible", 1), ("reversible", 2)]
    assert all(r["compiled_wall_ms"] > 0 and r["eager_cpu_ms"] > 0 for r in comp)
    assert comp[0]["compile_s"] > 0 and "compiled_mib_per_image" in comp[0]
    checks = read_results(smoke / "checks_cpu.json")["rows"]
    assert {r["check"] for r in checks} == {"channels_last", "bf16_autocast"}
    for r in checks:  # every check either measured both runs or says why it could not
        assert ("grad_rel_max" in r) != ("error" in r), r


def test_plan_section_measures_plans_and_the_peers_beside_them(smoke):
    import json

    from revsnn.bench.peers import peer_unavailable_reason

    doc = json.loads((smoke / "plan_budgets_cpu.json").read_text())
    r = doc["models"]["ms_resnet_test"]
    assert {"single:none", "single:checkpoint", "plan:50%"} <= set(r["rows"])
    for row in r["rows"].values():
        assert row["measured_peak_bytes"] > 0 and row["measured_step_s"] > 0
    peers = r["peers"]
    assert "CUDA" in peers["spikingjelly:ms_resnet34+memopt4"]["skipped"]
    plain = peers["spikingjelly:ms_resnet34"]
    reason = peer_unavailable_reason("spikingjelly:ms_resnet34")
    if reason:  # SpikingJelly not installed here: recorded as skipped with the install hint
        assert plain == {"skipped": reason}
    else:
        assert plain["measured_mib_per_image"] > 0 and plain["measured_step_s"] > 0
        assert plain["measured_ratio_to_peer_plain"] == 1.0
    assert "| spikingjelly:ms_resnet34+memopt4 | skipped" in (
        smoke / "plan_budgets_cpu.md").read_text()
    assert (smoke / "plan_space_ms_resnet_test_cpu.png").stat().st_size > 0


def test_a_failing_check_child_becomes_failed_rows_with_its_message():
    """A check whose child dies (here: a model the registry does not know) is reported as
    failed rows carrying the child's message; the suite goes on."""
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_suite

        rows = gpu_suite.equality_checks(["no_such_model"], "cpu", 8, 2)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert {r["check"] for r in rows} == {"channels_last", "bf16_autocast"}
    for r in rows:
        assert r["ok"] is False and "child exited with 1" in r["error"], r
        assert "no_such_model" in r["error"], r
