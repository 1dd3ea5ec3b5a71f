"""Every number README.md and docs/*.md quote from docs/results/ agrees with its results file,
and every results file says where it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from revsnn.bench.docnumbers import check, doc_files, find_spans, lookup, write
from revsnn.bench.results import provenance, read_results, table, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def test_readme_and_docs_agree_with_their_results_files():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_the_readme_quotes_its_benchmark_numbers_through_markers():
    spans = find_spans(ROOT / "README.md")
    files = {s.file for s in spans}
    # the RevSNN, T-RevSNN and ParaRevSNN tables, the claims table and the main job
    for name in ("revsnn_cpu.json", "trevsnn_cpu.json", "pararevsnn_cpu.json",
                 "claims_cpu.json", "main_job_cpu.json"):
        assert name in files, name
    assert sum(s.kind == "table" for s in spans) >= 4


def test_every_results_file_records_its_provenance():
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for f in files:
        prov = read_results(f)["provenance"]
        for key in ("command", "device", "torch", "dtype", "commit", "date", "settings"):
            assert prov.get(key) not in (None, ""), (f.name, key)
        assert prov["commit"] != "unknown", f.name


def _repo(tmp_path: Path, value: float) -> Path:
    prov = provenance("cpu", {"batch": 4}, command="python benchmarks/x.py")
    rows = [{"model": "a", "mode": "none", "mib": 2.5}, {"model": "a", "mode": "reversible",
                                                         "mib": value}]
    write_results(tmp_path / "docs" / "results" / "x_cpu.json", prov, rows, {"ratio": 2.5 / value},
                  {"t": table(rows, {"model": "model", "mode": "mode", "mib": "MiB"}, prov)})
    return tmp_path


DOC = """# x

Reversible needs <!-- n x_cpu.json#rows[model=a,mode=reversible].mib .2f -->0.50<!-- /n --> MiB,
<!-- n x_cpu.json#summary.ratio .1f -->5.0<!-- /n -->x less
(<!-- n x_cpu.json#rows[0].mode -->none<!-- /n -->).

<!-- table x_cpu.json#tables.t -->
old table
<!-- /table -->

An example in a code block is not a marker:

```markdown
<!-- n x_cpu.json#summary.ratio .1f -->99<!-- /n -->
```
"""


def test_check_finds_a_stale_number_and_write_fixes_it(tmp_path):
    root = _repo(tmp_path, 0.5)
    (root / "README.md").write_text(DOC)
    problems = check(root)
    assert len(problems) == 1 and "old table" in problems[0]  # the numbers agree, the table not
    assert write(root) == [root / "README.md"]
    assert check(root) == []
    text = (root / "README.md").read_text()
    assert "| a | reversible | 0.50 |" in text and "Measured by `python benchmarks/x.py`" in text
    _repo(tmp_path, 0.25)  # a new measurement: two numbers and the table are now stale
    problems = check(root)
    assert len(problems) == 3 and any("'0.50'" in p and "'0.25'" in p for p in problems)
    write(root)
    assert "<!-- /n --> MiB" in (root / "README.md").read_text()
    assert ">0.25<" in (root / "README.md").read_text() and check(root) == []


def test_bad_markers_are_reported_not_skipped(tmp_path):
    root = _repo(tmp_path, 0.5)
    docs = root / "docs"
    (docs / "a.md").write_text("<!-- n x_cpu.json#rows[model=b].mib .2f -->1<!-- /n -->\n")
    (docs / "b.md").write_text("<!-- n missing.json#x -->1<!-- /n -->\n")
    (docs / "c.md").write_text("<!-- n x_cpu.json#summary.ratio -->5.0\n")  # never closed
    problems = "\n".join(check(root))
    assert "matches 0 records" in problems
    assert "missing.json does not exist" in problems
    assert "without a matching close" in problems
    with pytest.raises(ValueError, match="unresolvable"):
        write(root)
    assert [p.name for p in doc_files(root)] == ["a.md", "b.md", "c.md"]


def test_lookup_paths():
    doc = {"rows": [{"m": "a", "T": 4, "v": 1.5}, {"m": "a", "T": 8, "v": 2.5}],
           "summary": {"x.y": 3}}
    assert lookup(doc, "rows[m=a,T=8].v") == 2.5
    assert lookup(doc, "rows[-1].T") == 8
    with pytest.raises(KeyError, match="matches 2"):
        lookup(doc, "rows[m=a].v")
    with pytest.raises(KeyError, match="no key"):
        lookup(doc, "summary.z")
    assert json.loads(json.dumps(doc)) == doc


def test_the_main_job_accuracy_is_a_multi_seed_claim_a_newcomer_can_check():
    """The README gives the main job's accuracy over seeds (mean, standard deviation, range)
    from benchmarks/main_seeds.py's results file, says that CPUs move it by a few test images,
    and calls no run deterministic; the file's summary is the statistics of its own rows."""
    import statistics

    doc = read_results(RESULTS / "main_job_seeds_cpu.json")
    prov, rows, s = doc["provenance"], doc["rows"], doc["summary"]
    assert "benchmarks/main_seeds.py" in prov["command"]
    for key in ("device", "torch", "threads", "commit"):
        assert prov.get(key) not in (None, "", "unknown"), key
    seeds = [r["seed"] for r in rows]
    assert len(rows) >= 5 and len(set(seeds)) == len(rows) == s["runs"]
    for key in ("final_test_acc", "best_test_acc", "total_time_s"):
        values = [r[key] for r in rows]
        assert all(v > 0 for v in values), key
        assert s[key]["mean"] == pytest.approx(statistics.fmean(values)), key
        assert s[key]["std"] == pytest.approx(statistics.stdev(values)), key
        assert (s[key]["min"], s[key]["max"]) == (min(values), max(values)), key
    assert all(r["threads"] == prov["threads"] and r["torch"] == prov["torch"] for r in rows)
    readme = (ROOT / "README.md").read_text()
    quoted = {sp.path for sp in find_spans(ROOT / "README.md")
              if sp.file == "main_job_seeds_cpu.json"}
    assert {f"summary.final_test_acc.{k}" for k in ("mean", "std", "min", "max")} <= quoted
    assert "few test images" in readme
    for path in (ROOT / "README.md", ROOT / "docs" / "training.md"):
        assert "deterministic" not in path.read_text(), path.name
