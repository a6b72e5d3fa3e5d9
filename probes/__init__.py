"""Shortcut-learning probes: one module per family, one interface (``probes.base``)."""

from probes.registry import CHECK_IDS, get_probe

__all__ = ["CHECK_IDS", "get_probe"]
