"""One-sided binomial p-values and Clopper-Pearson lower bounds, elementwise or tabulated per k.

For n samples the agreement count k takes only the n + 1 values 0..n, so both quantities are
functions on {0, ..., n}: the ``*_table`` functions evaluate them once per (n, tau) or (n, alpha)
(cached, read-only arrays of length n + 1) and large inputs are answered by a lookup ``table[k]``,
which gives bit-identical values to evaluating scipy on every element.

Duality (METHOD §3 step 3): ``clopper_pearson_lower(k, n, a) > tau`` exactly when
``binomial_pvalues(k, n, tau) < a``, since Beta.cdf(tau; k, n - k + 1) = P[Bin(n, tau) >= k].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import special, stats

from certseg.stats._checks import check_count_n, check_counts, check_open_unit


def _pvalues_direct(k: np.ndarray, n: int, tau: float) -> np.ndarray:
    # P[Bin(n, tau) >= k] = sf(k - 1); sf(-1) = 1 for k = 0.
    return np.asarray(stats.binom.sf(k.astype(np.int64) - 1, n, tau), dtype=np.float64)


def _lower_direct(k: np.ndarray, n: int, alpha: float) -> np.ndarray:
    k64 = k.astype(np.int64)
    a = np.maximum(k64, 1).astype(np.float64)  # placeholder shape 1 where k = 0; replaced below
    b = (n - k64 + 1).astype(np.float64)
    lower = np.asarray(special.betaincinv(a, b, alpha), dtype=np.float64)
    return np.where(k64 == 0, 0.0, lower)


@lru_cache(maxsize=64)
def pvalue_table(n: int, tau: float) -> np.ndarray:
    """P[Bin(n, tau) >= k] for k = 0..n: a read-only (n + 1,) float64 array, non-increasing in k.

    table[0] = 1. Cached per (n, tau).
    """
    n = check_count_n(n)
    tau = check_open_unit(tau, "tau")
    table = _pvalues_direct(np.arange(n + 1), n, tau)
    table.setflags(write=False)
    return table


@lru_cache(maxsize=64)
def lower_bound_table(n: int, alpha: float) -> np.ndarray:
    """One-sided level-(1 - alpha) Clopper-Pearson lower bounds for k = 0..n.

    A read-only (n + 1,) float64 array: table[k] = Beta.ppf(alpha, k, n - k + 1), table[0] = 0.
    Every entry is < 1 (table[n] = alpha ** (1 / n)). Cached per (n, alpha).
    """
    n = check_count_n(n)
    alpha = check_open_unit(alpha, "alpha")
    table = _lower_direct(np.arange(n + 1), n, alpha)
    table.setflags(write=False)
    return table


def binomial_pvalues(k: np.ndarray | int, n: int, tau: float) -> np.ndarray:
    """One-sided p-values of H0: p <= tau given k successes out of n: P[Bin(n, tau) >= k].

    k: integer array of any shape with values in [0, n] (agreement counts). tau in (0, 1).
    Returns float64 of k's shape (a 0-d array for a scalar k); equals
    ``scipy.stats.binom.sf(k - 1, n, tau)`` elementwise (and 1 where k = 0).
    """
    n = check_count_n(n)
    tau = check_open_unit(tau, "tau")
    counts = check_counts(k, n, "k")
    if counts.size > n + 1:
        looked_up: np.ndarray = pvalue_table(n, tau)[counts]
        return looked_up
    return _pvalues_direct(counts, n, tau)


def clopper_pearson_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound of a binomial proportion, elementwise.

    k: integer array of any shape with values in [0, n]; alpha in (0, 1) the one-sided error.
    Returns float64 of k's shape: Beta.ppf(alpha, k, n - k + 1), and 0 where k = 0, so that
    P[p >= bound] >= 1 - alpha for every true proportion p. (statsmodels'
    ``proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]`` is the same number.)
    """
    n = check_count_n(n)
    alpha = check_open_unit(alpha, "alpha")
    counts = check_counts(k, n, "k")
    if counts.size > n + 1:
        looked_up: np.ndarray = lower_bound_table(n, alpha)[counts]
        return looked_up
    return _lower_direct(counts, n, alpha)


def min_count_to_certify(n: int, tau: float, alpha: float) -> int:
    """The smallest k in 0..n with P[Bin(n, tau) >= k] <= alpha, or n + 1 if there is none.

    A pixel tested at level alpha (reject when p-value <= alpha) is certified exactly when
    k >= this count (the p-value table is non-increasing in k).
    """
    table = pvalue_table(check_count_n(n), check_open_unit(tau, "tau"))
    alpha = check_open_unit(alpha, "alpha")
    hits = np.flatnonzero(table <= alpha)
    return int(hits[0]) if hits.size else int(n) + 1
