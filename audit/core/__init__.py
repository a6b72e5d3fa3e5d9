"""The foundation layer: config, errors, the stage cache, atomic io, logging, result types.

Framework-free and imported by every other layer; it imports none of them (the import
contract in ``pyproject.toml`` enforces it).
"""
