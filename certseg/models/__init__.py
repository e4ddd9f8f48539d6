"""Segmenter adapters."""
