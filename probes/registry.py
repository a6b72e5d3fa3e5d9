"""Check id -> probe class. Imported lazily so listing checks does not import TensorFlow."""

from __future__ import annotations

from importlib import import_module

from probes.base import Probe

_PROBES = {
    "data.confounding": "probes.data_checks:ConfoundingProbe",
    "data.leakage": "probes.data_checks:LeakageProbe",
    "site.image": "probes.site:SiteImageProbe",
    "site.embedding": "probes.site:SiteEmbeddingProbe",
    "attention.border": "probes.attention:BorderAttentionProbe",
    "attention.outside_lung": "probes.attention:OutsideLungAttentionProbe",
    "masking.raw_vs_lung": "probes.masking:RawVsLungProbe",
    "ablation.class_size": "probes.ablation:ClassSizeProbe",
    "generalization.leave_one_source_out": "probes.generalization:LeaveOneSourceOutProbe",
}
CHECK_IDS = tuple(_PROBES)


def get_probe(check_id: str) -> Probe:
    """A fresh probe instance for ``check_id``."""
    try:
        target = _PROBES[check_id]
    except KeyError:
        raise ValueError(
            f"Unknown check id {check_id!r}; known checks: {', '.join(CHECK_IDS)}"
        ) from None
    module_name, class_name = target.split(":")
    return getattr(import_module(module_name), class_name)()
