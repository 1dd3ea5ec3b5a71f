"""Bridges to other SNN libraries (optional extras, imported lazily)."""
