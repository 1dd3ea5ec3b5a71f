"""Every ```python block of README.md and docs/training.md runs as written (each block on its
own, in a fresh namespace, from a temporary working directory)."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "training.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


NOT_RUN = re.compile(r"<!-- not run: (.*?) -->\n$")


def _blocks():
    """Each block; one right after ``<!-- not run: REASON -->`` (it needs files that are not
    here) is listed as skipped with that reason. README.md has none."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start()].count("\n") + 2
            why = NOT_RUN.search(text[: m.start()])
            marks = [pytest.mark.skip(reason=why.group(1))] if why else []
            out.append(pytest.param(doc, line, m.group(1), id=f"{doc.name}:{line}", marks=marks))
    return out


BLOCKS = _blocks()


def test_the_readme_has_python_blocks_and_runs_every_one():
    readme = [b for b in BLOCKS if b.values[0].name == "README.md"]
    assert readme and not any(b.marks for b in readme)


@pytest.mark.parametrize("doc, line, code", BLOCKS)
def test_block_runs_as_written(doc, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files (runs/...) write them here
    # Line numbers in a traceback point into the document.
    exec(compile("\n" * (line - 1) + code, str(doc), "exec"), {"__name__": "__doc_block__"})


def test_blocks_that_are_not_run_still_compile():
    for b in BLOCKS:
        doc, line, code = b.values
        compile(code, f"{doc}:{line}", "exec")
