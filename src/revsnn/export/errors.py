"""The exporter's errors and the lazy import of the optional ``nir`` package."""

from __future__ import annotations

from typing import Any

__all__ = ["ExportError", "require_nir"]


class ExportError(ValueError):
    """A network, or one of its layers, that NIR cannot express (the message names the layer
    and the reason), or a NIR graph that :func:`revsnn.export.from_nir` cannot run."""


def refuse(where: str, reason: str) -> ExportError:
    """``ExportError("<where>: <reason>")``."""
    return ExportError(f"{where}: {reason}")


def require_nir() -> Any:
    """The ``nir`` module, or an ``ImportError`` naming the extra that installs it."""
    try:
        import nir
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "NIR export and import need the 'nir' package: pip install 'revsnn[nir]' "
            f"(or pip install 'nir>=1.0.8'); import failed: {err}"
        ) from err
    return nir
