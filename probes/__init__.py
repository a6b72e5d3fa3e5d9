"""Shortcut-learning checks: one module per check in ``probes.checks``, found by
``probes.registry``; the interface is ``probes.base``."""
