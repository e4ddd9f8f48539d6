"""Certification statistics (pure numpy/scipy)."""
