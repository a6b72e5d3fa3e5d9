"""cxr-shortcut-audit core: config, data, stage cache, pipeline, gate and CLI."""

__version__ = "0.1.0"
