"""Family-wise multiple-testing corrections over the pixels of one image: Holm and Bonferroni.

Decisions are exactly those of ``statsmodels.stats.multitest.multipletests`` (method "holm" /
"bonferroni"), ties included: with m p-values sorted ascending, Holm rejects p_(j) for j = 1, 2, ...
while p_(j) <= alpha / (m - j + 1); Bonferroni rejects p <= alpha / m. Both control the family-wise
error rate at alpha; Holm rejects a superset of Bonferroni's rejections.

Two forms: ``holm_reject`` / ``bonferroni_reject`` take arbitrary p-values (a sort, O(m log m));
``reject_by_count`` takes a histogram of agreement counts and the p-value per count (O(n) work
after one O(m) histogram), which is what certification uses.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from certseg.stats._checks import check_open_unit

Correction = Literal["holm", "bonferroni"]
CORRECTIONS: tuple[str, ...] = get_args(Correction)


def check_correction(correction: object) -> Correction:
    """Return `correction` if it is one of CORRECTIONS, else raise ValueError naming it."""
    if correction == "holm":
        return "holm"
    if correction == "bonferroni":
        return "bonferroni"
    raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")


def _check_pvalues(pvalues: np.ndarray) -> np.ndarray:
    array = np.asarray(pvalues, dtype=np.float64)
    if array.size and not (np.all(array >= 0.0) and np.all(array <= 1.0)):
        raise ValueError("pvalues must lie in [0, 1] (and not be NaN)")
    return array


def bonferroni_reject(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Bonferroni: reject where p <= alpha / m.

    pvalues: any shape, m = its size. Returns bool of the same shape.
    """
    alpha = check_open_unit(alpha, "alpha")
    array = _check_pvalues(pvalues)
    if array.size == 0:
        return np.zeros(array.shape, dtype=bool)
    return array <= alpha / float(array.size)


def holm_reject(pvalues: np.ndarray, alpha: float) -> np.ndarray:
    """Holm's step-down procedure, by sorting the p-values.

    pvalues: any shape, m = its size. Returns bool of the same shape.
    Sorted ascending, p_(j) is rejected while p_(j) <= alpha / (m - j + 1), j = 1..m; the first
    failure stops the procedure. Tied p-values are all rejected or all kept.
    """
    alpha = check_open_unit(alpha, "alpha")
    array = _check_pvalues(pvalues)
    flat = array.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    passed = flat[order] <= alpha / np.arange(m, 0, -1)
    failures = np.flatnonzero(~passed)
    n_rejected = int(failures[0]) if failures.size else m
    reject = np.zeros(m, dtype=bool)
    reject[order[:n_rejected]] = True
    return reject.reshape(array.shape)


def reject_by_count(
    histogram: np.ndarray, pvalue_per_count: np.ndarray, alpha: float, correction: Correction
) -> np.ndarray:
    """Which agreement counts k are rejected, given how many pixels have each count.

    histogram: (n + 1,) non-negative ints, histogram[k] = number of pixels with count k;
      m = its sum.
    pvalue_per_count: (n + 1,) float64 p-value of a pixel with count k (e.g. ``pvalue_table``).
    Returns (n + 1,) bool ``reject_k``; pixel i is rejected exactly when ``reject_k[k_i]``, and this
    equals ``holm_reject`` / ``bonferroni_reject`` applied to the m per-pixel p-values.

    Holm here sorts the (at most n + 1) distinct counts present by p-value instead of the m pixels:
    a count group occupying sorted positions j0 .. j0 + h - 1 passes when its p-value is
    <= alpha / (m - j0 + 1) (the smallest threshold in the group), and the first group that fails
    stops the procedure — the same decisions as the per-pixel step-down, ties included.
    """
    alpha = check_open_unit(alpha, "alpha")
    correction = check_correction(correction)
    hist = np.asarray(histogram)
    table = np.asarray(pvalue_per_count, dtype=np.float64)
    if hist.ndim != 1 or hist.shape != table.shape:
        raise ValueError(
            f"histogram and pvalue_per_count must both have shape (n + 1,), "
            f"got {hist.shape} and {table.shape}"
        )
    if hist.dtype.kind not in "iu" or (hist.size and int(hist.min()) < 0):
        raise ValueError("histogram must hold non-negative integers")
    m = int(hist.sum())
    reject_k = np.zeros(table.shape, dtype=bool)
    if m == 0:
        return reject_k
    if correction == "bonferroni":
        return table <= alpha / float(m)
    present = np.flatnonzero(hist)
    order = np.argsort(table[present], kind="stable")
    counts_sorted = present[order]
    sizes = hist[counts_sorted].astype(np.int64)
    start = np.cumsum(sizes) - sizes  # 0-based sorted position j0 - 1 of each group's first pixel
    passed = table[counts_sorted] <= alpha / (m - start)
    reject_k[counts_sorted[np.logical_and.accumulate(passed)]] = True
    return reject_k
