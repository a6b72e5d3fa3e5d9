"""The registry of checks: every module of ``probes.checks``, found by ``pkgutil``.

Adding a check is adding one module there (``SPEC`` and ``run``); nothing else names it.
The modules are imported to read their specs, which is cheap: a check module imports
TensorFlow only inside ``run``, so listing the checks (``cxr-audit checks``) never does.
Discovery runs on every call rather than once at import: there is no registry state to
go stale, and ``probes.checks.__path__`` may be extended (a test adds a toy check so).
"""

from __future__ import annotations

import pkgutil
from importlib import import_module

from probes import checks
from probes.base import Check, CheckSpec


def _modules() -> list[Check]:
    return [import_module(f"{checks.__name__}.{info.name}")
            for info in pkgutil.iter_modules(checks.__path__) if not info.name.startswith("_")]


def _checks() -> dict[str, Check]:
    """Check id -> module, in the specs' order (``CheckSpec.order``, then id)."""
    found: dict[str, Check] = {}
    for module in sorted(_modules(), key=lambda m: (m.SPEC.order, m.SPEC.id)):
        if module.SPEC.id in found:
            raise ValueError(f"check id {module.SPEC.id!r} is defined by both "
                             f"{found[module.SPEC.id].__name__} and {module.__name__}")
        found[module.SPEC.id] = module
    return found


def specs() -> tuple[CheckSpec, ...]:
    """Every registered check's spec, data checks first, in the order runs and reports use."""
    return tuple(module.SPEC for module in _checks().values())


def check_ids() -> tuple[str, ...]:
    """Every registered check id, in ``specs()`` order."""
    return tuple(spec.id for spec in specs())


def get_check(check_id: str) -> Check:
    """The check module for ``check_id`` (its ``SPEC`` and ``run``).

    Raises:
        ValueError: ``check_id`` is not registered; the message lists the known ids.
    """
    found = _checks()
    try:
        return found[check_id]
    except KeyError:
        raise ValueError(
            f"Unknown check id {check_id!r}; known checks: {', '.join(found)}") from None
