"""Bounded YAML for configs: the size, the alias expansion and the number syntax are checked.

``yaml.safe_load`` runs no code, but a few hundred bytes of nested anchors describe gigabytes
once every alias is expanded (each copy made by a later walk over the value), a recursive
anchor describes an infinite value, and YAML 1.1 reads ``0x10`` as 16, ``1:30`` as 90 and
``yes`` as true. Here:

- a config text larger than :data:`MAX_CONFIG_BYTES` is refused unread;
- the composed node graph is walked once (shared nodes counted once per use, with memoised
  sizes, so the walk costs the size of the *text*): more than :data:`MAX_CONFIG_NODES` values
  after expansion, nesting deeper than :data:`MAX_CONFIG_DEPTH`, or an anchor used inside
  itself is refused before any Python value is built;
- plain scalars resolve with YAML 1.2's core schema: decimal integers only, decimal floats
  (``1e-5`` included, ``.inf``, ``.nan``), ``true``/``false``, ``null``/``~``; anything else
  (``0x10``, ``020``, ``0o7``, ``1_000``, ``1:30``, ``yes``, dates) stays a string, which the
  typed config keys refuse.

PyYAML is the ``train`` extra, imported on first use.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

__all__ = [
    "MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "MAX_CONFIG_NODES", "YAMLBoundError", "load_yaml",
]

#: the largest config text read (the shipped configs are about 1 KiB).
MAX_CONFIG_BYTES = 1 << 20
#: the most values (scalars, lists, mappings) a config may hold once aliases are expanded.
MAX_CONFIG_NODES = 100_000
#: the deepest nesting of lists and mappings.
MAX_CONFIG_DEPTH = 64

_RESOLVERS = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+0123456789."),
)
_REPLACED = {tag for tag, _, _ in _RESOLVERS} | {"tag:yaml.org,2002:timestamp"}
_LOADER: Optional[type] = None


class YAMLBoundError(ValueError):
    """A YAML text beyond the bounds of the module docstring (size, expansion, depth, cycle)."""


def _loader_class() -> type:
    """``yaml.SafeLoader`` with the core-schema resolvers of the module docstring."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class ConfigLoader(yaml.SafeLoader):
            pass

        ConfigLoader.yaml_implicit_resolvers = {
            ch: [(tag, rx) for tag, rx in lst if tag not in _REPLACED]
            for ch, lst in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
        for tag, rx, first in _RESOLVERS:
            ConfigLoader.add_implicit_resolver(tag, re.compile(rx), list(first))
        _LOADER = ConfigLoader
    return _LOADER


def _check_expansion(root: Any, where: str) -> None:
    """Refuse a node graph that expands too far, nests too deep or contains itself."""
    import yaml

    sizes: Dict[int, int] = {}
    active = set()

    def visit(node: Any, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise YAMLBoundError(f"{where}: a YAML alias refers to its own anchor (a recursive "
                             "value); write the value out")
        if depth > MAX_CONFIG_DEPTH:
            raise YAMLBoundError(f"{where}: lists and mappings nest deeper than {MAX_CONFIG_DEPTH}")
        active.add(key)
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += visit(child, depth + 1)
            if total > MAX_CONFIG_NODES:
                raise YAMLBoundError(f"{where}: expands to more than {MAX_CONFIG_NODES} values "
                                 "(YAML aliases repeat their anchors); refusing to build it")
        active.discard(key)
        sizes[key] = total
        return total

    visit(root, 0)


def load_yaml(text: str, where: str) -> Any:
    """The value of one YAML document ``text`` (``where`` names it in errors), bounded as the
    module docstring says. YAML syntax errors are ``yaml.YAMLError``; bounds are
    :class:`YAMLBoundError`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise YAMLBoundError(f"{where}: {len(text)} characters, more than a config may hold "
                         f"({MAX_CONFIG_BYTES})")
    loader = _loader_class()(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLBoundError(f"{where}: lists and mappings nest too deeply") from None
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()
