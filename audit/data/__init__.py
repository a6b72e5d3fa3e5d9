"""Data layer: manifests, importers, validation, splits and the image store."""
