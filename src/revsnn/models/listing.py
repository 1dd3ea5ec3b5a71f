"""``revsnn models``: the registered models as a table (or JSON), filtered by pattern and family.

::

    revsnn models                       # every model
    revsnn models 'trevsnn*'            # a shell pattern
    revsnn models --family revsnn       # one family
    revsnn models --json                # for scripts

Parameter counts are at the model's default classes, counted on PyTorch's meta device (no
memory is allocated).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

import torch

from ..errors import OneLineParser
from .registry import create_model, families, list_models, model_info

__all__ = ["main", "count_parameters"]


def count_parameters(name: str) -> int:
    """Parameters of the registered model ``name`` at its defaults (shared tensors once)."""
    with torch.device("meta"):
        m = create_model(name)
    return sum(p.numel() for p in {id(p): p for p in m.parameters()}.values())


def _rows(names: List[str]) -> List[Dict]:
    rows = []
    for n in names:
        info = model_info(n)
        rows.append(dict(
            name=n, family=info.family, parameters=count_parameters(n), input=info.input,
            T=info.T, classes=info.num_classes, image_size=info.image_size,
            memory_modes=list(info.memory_modes), default_memory_mode=info.default_memory_mode,
            paper=info.paper, description=info.description,
        ))
    return rows


def _table(rows: List[Dict]) -> str:
    head = ["name", "family", "parameters", "input", "T", "size", "memory modes", "description"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        default = r["default_memory_mode"]
        modes = ", ".join(f"{m}*" if m == default else m for m in r["memory_modes"])
        lines.append(
            f"| {r['name']} | {r['family']} | {r['parameters']:,} | {r['input']} | {r['T']} | "
            f"{r['image_size']} | {modes} | {r['description']} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="revsnn models",
        description="List the registered models: family, parameters (at the default classes), "
        "input kind (image: static images only; image+frames: static images or frames; "
        "frames: event data), default T and image size, and the memory modes each supports "
        "(* marks the default).",
    )
    p.add_argument("pattern", nargs="?", default="*",
                   help="shell-style pattern on the model name, e.g. 'trevsnn*' (default: all)")
    p.add_argument("--family", help=f"only this family (one of: {', '.join(families())})")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)  # a bad flag: UsageError, one line from ``revsnn``
    if args.family is not None and args.family not in families():
        print(f"revsnn models: unknown family {args.family!r}; expected one of "
              f"{', '.join(families())}", file=sys.stderr)
        return 2
    names = list_models(args.pattern, family=args.family)
    if not names:
        where = f" in family {args.family!r}" if args.family else ""
        print(f"revsnn models: no model matches {args.pattern!r}{where} "
              f"({len(list_models())} registered; 'revsnn models' lists them)", file=sys.stderr)
        return 1
    rows = _rows(names)
    print(json.dumps(rows, indent=1) if args.json else _table(rows))
    return 0
