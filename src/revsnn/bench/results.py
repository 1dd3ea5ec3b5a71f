"""Results files: every number the README and docs quote lives in one of these.

A results file is one JSON document under ``docs/results/`` written by one benchmark command::

    {"provenance": {"command": "python benchmarks/bench_revsnn.py", "device": "cpu",
                    "torch": "2.13.0+cpu", "commit": "abc1234", "date": "...", "threads": 1,
                    "dtype": "float32", "python": "3.11.7", "settings": {...}},
     "rows": [{...}, ...],          # one flat record per measurement
     "summary": {...},              # derived figures quoted in prose (ratios, growth, ...)
     "tables": {"name": "| ... |"}} # markdown tables (with a provenance line) quoted verbatim

:mod:`revsnn.bench.docnumbers` copies numbers and tables from these files into marked spans of
README.md and docs/*.md, and checks that they agree.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from .report import environment, markdown_table

__all__ = [
    "RESULTS_DIR",
    "publish",
    "caption",
    "command_line",
    "provenance",
    "read_results",
    "table",
    "write_results",
]

#: Where the published results live, relative to the repository root.
RESULTS_DIR = Path("docs") / "results"


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command that produced a file, as a reader would type it from the repository root:
    ``python benchmarks/x.py ARGS`` for a script, ``revsnn ...`` for the console script."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]) if argv else Path("python")
    if prog.name == "revsnn":
        head = ["revsnn"]
    elif prog.suffix == ".py":
        try:
            rel = prog.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            rel = prog
        head = ["python", rel.as_posix()]
    else:
        head = ["python", "-m", prog.stem] if prog.stem != "python" else ["python"]
    return " ".join(head + [shlex.quote(a) for a in argv[1:]])


def provenance(
    device: Union[str, torch.device],
    settings: Mapping[str, Any],
    command: Optional[str] = None,
    dtype: torch.dtype = torch.float32,
) -> Dict[str, Any]:
    """Device, torch, dtype, git commit, threads, date, python, the command and its settings."""
    env = environment(device, dtype)
    return {
        "command": command if command is not None else command_line(),
        **env,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "python": platform.python_version(),
        "settings": dict(settings),
    }


def caption(prov: Mapping[str, Any]) -> str:
    """One line saying where a table's numbers come from."""
    threads = prov.get("threads")
    where = prov["device"] + (f", {threads} thread{'s' if threads != 1 else ''}"
                              if str(prov["device"]).startswith("cpu") and threads else "")
    return (f"Measured by `{prov['command']}` ({where}, torch {prov['torch']}, "
            f"{prov['dtype']}, commit {prov['commit']}, {prov['date']}).")


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str],
          prov: Mapping[str, Any], fmt: Optional[Mapping[str, str]] = None) -> str:
    """A markdown table of ``rows`` (``columns``: key -> header; ``fmt``: key -> format spec,
    ``.2f`` by default for floats; missing values stay empty) followed by the caption."""
    fmt = dict(fmt or {})

    def cell(r: Mapping[str, Any], k: str) -> str:
        v = r.get(k)
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (
                isinstance(v, float) or k in fmt):
            return format(v, fmt.get(k, ".2f"))
        return str(v)

    body = [{h: cell(r, k) for k, h in columns.items()} for r in rows]
    return markdown_table(body, list(columns.values())) + "\n\n" + caption(prov)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _clean(v.tolist())
    if hasattr(v, "value") and isinstance(v.value, str):  # enums
        return v.value
    return v


def write_results(
    path: Union[str, Path],
    prov: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]] = (),
    summary: Optional[Mapping[str, Any]] = None,
    tables: Optional[Mapping[str, str]] = None,
    sections: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write one results file (parents created); returns its path. ``sections`` adds further
    top-level entries (e.g. a second list of rows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"provenance": dict(prov), "rows": list(rows), "summary": dict(summary or {}),
           "tables": dict(tables or {}), **dict(sections or {})}
    path.write_text(json.dumps(_clean(doc), indent=1, ensure_ascii=False) + "\n")
    return path


def publish(path: Union[str, Path], prov: Mapping[str, Any], *args: Any, **kwargs: Any) -> int:
    """What a benchmark script ends with: print its tables, write its results file
    (:func:`write_results`, same arguments), say where (on stderr); returns 0, the exit
    status."""
    tables = kwargs.get("tables", args[2] if len(args) > 2 else None)
    for text in (tables or {}).values():
        print(text + "\n")
    out = write_results(path, prov, *args, **kwargs)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def read_results(path: Union[str, Path]) -> Dict[str, Any]:
    """The JSON document of a results file."""
    return json.loads(Path(path).read_text())
