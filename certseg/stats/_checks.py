"""Argument validation for the statistics modules: every error names the offending argument."""

from __future__ import annotations

import math
import numbers

import numpy as np


def check_count_n(n: object) -> int:
    """Return `n` (number of Monte-Carlo samples) as an int; ValueError unless an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return int(n)


def check_open_unit(value: object, name: str, low: float = 0.0) -> float:
    """Return `value` as a float; ValueError naming `name` unless low < value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number in ({low}, 1), got {value!r}")
    out = float(value)
    if not (low < out < 1.0):
        raise ValueError(f"{name} must be in ({low}, 1), got {value!r}")
    return out


def check_positive(value: object, name: str) -> float:
    """Return `value` as a float; ValueError naming `name` unless finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive real number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return out


def check_integer_array(values: object, name: str) -> np.ndarray:
    """Return `values` as a numpy array; ValueError naming `name` unless its dtype is integer."""
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array


def check_counts(counts: object, n: int, name: str = "counts") -> np.ndarray:
    """Return integer `counts` as an array; ValueError naming `name` unless all lie in [0, n]."""
    array = check_integer_array(counts, name)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0:
            raise ValueError(f"{name} must be >= 0, got a minimum of {low}")
        if high > n:
            raise ValueError(f"{name} must be <= n = {n}, got a maximum of {high}")
    return array
