"""Benchmark output: markdown tables, CSV files and PNG plots.

Rows are flat dicts (one per model x setting x memory mode). Tables and CSV need nothing but the
standard library; plots need matplotlib (``pip install revsnn[bench]``), imported only inside
the plotting functions.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

__all__ = [
    "format_value",
    "markdown_table",
    "write_csv",
    "read_csv",
    "git_commit",
    "environment",
    "plots_available",
    "plot_lines",
    "plot_bars",
    "plot_memory",
]

PathLike = Union[str, "os.PathLike[str]"]


def format_value(v: Any) -> str:
    """Compact text for a table cell (floats with 4 significant digits)."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.4g}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, (list, tuple)):
        return " ".join(format_value(x) for x in v)
    return str(v)


def _columns(rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]]) -> List[str]:
    if columns is not None:
        return list(columns)
    cols: List[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def markdown_table(
    rows: Sequence[Dict[str, Any]], columns: Optional[Sequence[str]] = None
) -> str:
    """A GitHub markdown table of ``rows`` (all keys in first-seen order, or ``columns``)."""
    cols = _columns(rows, columns)
    if not cols:
        return ""
    lines = [
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def _csv_value(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    return "" if v is None else v


def write_csv(
    rows: Sequence[Dict[str, Any]], path: PathLike, columns: Optional[Sequence[str]] = None
) -> Path:
    """Write ``rows`` to ``path`` (parents created); lists become space-separated cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = _columns(rows, columns)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: _csv_value(r.get(c)) for c in cols})
    return path


def read_csv(path: PathLike) -> List[Dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv` (values as strings)."""
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def git_commit(cwd: Optional[PathLike] = None) -> str:
    """Short commit hash of the checkout holding ``cwd`` (this package by default), with
    ``-dirty`` when tracked files are modified; "unknown" without git or commits."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
            timeout=10,
        )
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD"], cwd=cwd, capture_output=True, timeout=10
        )
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: Union[str, torch.device]) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    return str(dev)


def environment(device: Union[str, torch.device], dtype: torch.dtype) -> Dict[str, str]:
    """The provenance every row carries: device, torch version, dtype, git commit."""
    return {
        "device": _device_name(device),
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "commit": git_commit(),
    }


def plots_available() -> bool:
    """True when matplotlib (the ``bench`` extra) can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PNG plots need matplotlib: pip install revsnn[bench]"
        ) from e
    return plt


def _float(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _save(plt, fig, path: PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_lines(
    rows: Iterable[Dict[str, Any]],
    x: str,
    y: str,
    group_by: Sequence[str],
    path: PathLike,
    title: str = "",
    ylabel: Optional[str] = None,
    xlabel: Optional[str] = None,
) -> Path:
    """One line per group (e.g. per memory mode): ``y`` against numeric ``x``, saved as PNG."""
    plt = _pyplot()
    groups: Dict[str, List[tuple]] = {}
    for r in rows:
        xv, yv = _float(r.get(x)), _float(r.get(y))
        if xv is None or yv is None:
            continue
        label = " / ".join(str(r.get(g, "")) for g in group_by)
        groups.setdefault(label, []).append((xv, yv))
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in groups.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_bars(
    rows: Iterable[Dict[str, Any]],
    label_keys: Sequence[str],
    y: str,
    path: PathLike,
    title: str = "",
    ylabel: Optional[str] = None,
    horizontal: bool = False,
) -> Path:
    """One bar per row, labelled by ``label_keys`` joined with " / ", saved as PNG."""
    plt = _pyplot()
    labels: List[str] = []
    values: List[float] = []
    for r in rows:
        v = _float(r.get(y))
        if v is None:
            continue
        labels.append(" / ".join(str(r.get(k, "")) for k in label_keys))
        values.append(v)
    n = max(len(values), 1)
    if horizontal:
        fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * n))
        ax.barh(range(len(values)), values)
        ax.set_yticks(range(len(values)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel or y)
    else:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * n + 2), 4))
        ax.bar(range(len(values)), values)
        ax.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    return _save(plt, fig, path)


def plot_memory(
    rows: Sequence[Dict[str, Any]],
    x: str,
    group_by: Sequence[str],
    ranges: Sequence[Sequence[int]],
    path: PathLike,
    title: str = "",
    xlabel: Optional[str] = None,
) -> Optional[Path]:
    """Memory per image (``mib_<B1>_<B2>`` of each row) against ``x``, one line per group and
    batch range; ``None`` (nothing written) without matplotlib."""
    if not plots_available():
        return None
    keys = {"_".join(map(str, r)): "→".join(map(str, r)) for r in ranges}
    pts = [{**r, "range": label, "mib": r[f"mib_{k}"]} for r in rows for k, label in keys.items()]
    return plot_lines(pts, x, "mib", [*group_by, "range"], path, title=title,
                      ylabel="MiB per image", xlabel=xlabel or x)
