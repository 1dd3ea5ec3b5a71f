"""Numbers in README.md and docs/*.md, copied from (and checked against) docs/results/.

Two markers, both HTML comments, so they do not show when the markdown is rendered:

- a number (or short text) inside prose::

      reaches **<!-- n main_job_cpu.json#summary.final_test_acc .2f -->96.11<!-- /n --> %**

  ``FILE#PATH FORMAT``: a results file under ``docs/results/``, a path into its JSON, and an
  optional Python format spec (``.2f``, ``,d``, ``.1f``; without one the value is printed with
  ``str``). A path is dot-separated keys; a list of records is indexed by ``[3]`` or selected
  by ``[key=value,key2=value2]`` (exactly one record must match, values compared as text):
  ``rows[model=revs_resnet37,mode=reversible].mib_16_32``.
- a table (or any block) stored verbatim in the file::

      <!-- table revsnn_cpu.json#tables.memory -->
      | model | ... |
      <!-- /table -->

Markers inside fenced code blocks are examples and are ignored.
``python -m revsnn.bench.docnumbers`` reports every marked span that disagrees with its results
file (exit 1); ``--write`` rewrites the spans from the files. The test suite runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["Span", "check", "doc_files", "find_spans", "lookup", "main", "render", "write"]

NUMBER = re.compile(r"<!-- n (?P<file>[^#\s]+)#(?P<path>\S+?)(?: (?P<fmt>\S+))? -->"
                    r"(?P<text>[^<]*)<!-- /n -->")
TABLE = re.compile(r"<!-- table (?P<file>[^#\s]+)#(?P<path>\S+) -->\n(?P<text>.*?)\n?"
                   r"<!-- /table -->", re.S)
_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[[^\]]*\])*)")


@dataclass
class Span:
    """One marked span: where it is, what it points at, and what it says now."""

    doc: Path
    line: int
    kind: str  # "n" or "table"
    file: str
    path: str
    fmt: Optional[str]
    text: str
    start: int
    end: int  # of the text inside the markers


def doc_files(root: Path) -> List[Path]:
    """README.md and docs/*.md of the repository at ``root``."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.exists()]


_FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)


def _mask_fences(text: str) -> str:
    """``text`` with fenced code blocks blanked (same offsets): examples are not markers."""
    return _FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def find_spans(doc: Path, text: Optional[str] = None) -> List[Span]:
    """Every marked span of ``doc`` (in order), outside fenced code blocks."""
    text = doc.read_text() if text is None else text
    masked = _mask_fences(text)
    spans = []
    for kind, rx in (("n", NUMBER), ("table", TABLE)):
        for m in rx.finditer(masked):
            spans.append(Span(doc, text.count("\n", 0, m.start()) + 1, kind, m["file"],
                              m["path"], m.groupdict().get("fmt"), m["text"], m.start("text"),
                              m.end("text")))
    opened = masked.count("<!-- table ") + len(re.findall(r"<!-- n ", masked))
    if opened != len(spans):
        raise ValueError(f"{doc}: {opened - len(spans)} marker(s) without a matching close "
                         "(<!-- /n --> or <!-- /table -->) or with a malformed head")
    return sorted(spans, key=lambda s: s.start)


def _select(items: Any, selector: str, where: str) -> Any:
    if not isinstance(items, list):
        raise KeyError(f"{where}: [{selector}] needs a list, found {type(items).__name__}")
    if selector.strip().lstrip("-").isdigit():
        return items[int(selector)]
    conds = [c.split("=", 1) for c in selector.split(",")]
    if any(len(c) != 2 for c in conds):
        raise KeyError(f"{where}: selector [{selector}] must be an index or key=value,...")
    hits = [it for it in items if isinstance(it, dict)
            and all(str(it.get(k.strip())) == v.strip() for k, v in conds)]
    if len(hits) != 1:
        raise KeyError(f"{where}: [{selector}] matches {len(hits)} records, expected 1")
    return hits[0]


def lookup(doc: Dict[str, Any], path: str) -> Any:
    """The value at ``path`` (see the module docstring) in a results document."""
    value: Any = doc
    for part in _split(path):
        m = _SEGMENT.fullmatch(part)
        if not m:
            raise KeyError(f"bad path segment {part!r} in {path!r}")
        key, selectors = m.group(1), m.group(2)
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{path}: no key {key!r}")
        value = value[key]
        for sel in re.findall(r"\[([^\]]*)\]", selectors):
            value = _select(value, sel, path)
    return value


def _split(path: str) -> List[str]:
    parts, depth, cur = [], 0, ""
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def render(span: Span, results_dir: Path, cache: Optional[Dict[str, Any]] = None) -> str:
    """What the span must say, from its results file."""
    cache = {} if cache is None else cache
    if span.file not in cache:
        path = results_dir / span.file
        if not path.exists():
            raise FileNotFoundError(f"results file {path} does not exist")
        cache[span.file] = json.loads(path.read_text())
    value = lookup(cache[span.file], span.path)
    if span.kind == "table":
        if not isinstance(value, str):
            raise TypeError(f"{span.file}#{span.path} is a {type(value).__name__}, not text")
        return value.rstrip("\n")
    if span.fmt:
        return format(value, span.fmt)
    return str(value)


def _problems(root: Path, docs: Sequence[Path]) -> Tuple[List[str], Dict[Path, str]]:
    results_dir = root / "docs" / "results"
    cache: Dict[str, Any] = {}
    problems: List[str] = []
    rewritten: Dict[Path, str] = {}
    for doc in docs:
        text = doc.read_text()
        try:
            spans = find_spans(doc, text)
        except ValueError as err:
            problems.append(str(err))
            continue
        out, last = [], 0
        for s in spans:
            where = f"{doc.relative_to(root)}:{s.line}"
            try:
                want = render(s, results_dir, cache)
            except (KeyError, IndexError, TypeError, ValueError, FileNotFoundError) as err:
                problems.append(f"{where}: {s.file}#{s.path}: {err}")
                want = s.text
            if want != s.text:
                shown = s.text if len(s.text) < 60 else s.text[:57] + "..."
                problems.append(f"{where}: {s.file}#{s.path} says {shown!r}, the results "
                                f"file gives {want if len(want) < 60 else want[:57] + '...'!r}")
            out += [text[last:s.start], want]
            last = s.end
        out.append(text[last:])
        rewritten[doc] = "".join(out)
    return problems, rewritten


def check(root: Path, docs: Optional[Sequence[Path]] = None) -> List[str]:
    """Disagreements between marked spans and their results files (empty when all agree)."""
    root = Path(root)
    return _problems(root, docs if docs is not None else doc_files(root))[0]


def write(root: Path, docs: Optional[Sequence[Path]] = None) -> List[Path]:
    """Rewrite every marked span from its results file; returns the documents changed.
    Unresolvable spans (missing file or key) are left as they are and raise afterwards."""
    root = Path(root)
    docs = docs if docs is not None else doc_files(root)
    problems, rewritten = _problems(root, docs)
    changed = []
    for doc, text in rewritten.items():
        if text != doc.read_text():
            doc.write_text(text)
            changed.append(doc)
    broken = [p for p in problems if "says" not in p]
    if broken:
        raise ValueError("unresolvable markers:\n" + "\n".join(broken))
    return changed


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m revsnn.bench.docnumbers",
        description="Check (default) or rewrite (--write) the numbers and tables that README.md "
        "and docs/*.md quote from docs/results/.")
    p.add_argument("--write", action="store_true", help="rewrite the marked spans")
    p.add_argument("--root", type=Path, default=Path("."), help="repository root")
    args = p.parse_args(argv)
    if args.write:
        for doc in write(args.root):
            print(f"rewrote {doc}")
    problems = check(args.root)
    for line in problems:
        print(line, file=sys.stderr)
    n = sum(len(find_spans(d)) for d in doc_files(args.root))
    print(f"{n} marked spans, {len(problems)} disagree" + ("" if problems else ": all agree"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
