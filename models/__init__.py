"""Classifier backbones and head, training (cached-feature and end-to-end), the U-Net."""
