"""Utilities (resolution change of pretrained weights, ...)."""
