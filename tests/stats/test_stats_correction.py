"""Holm and Bonferroni against statsmodels multipletests, by sorting and by count histogram."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.multitest import multipletests

from certseg.stats import bonferroni_reject, holm_reject, pvalue_table, reject_by_count


def _statsmodels(pvalues: np.ndarray, alpha: float, method: str) -> np.ndarray:
    return np.asarray(multipletests(pvalues.ravel(), alpha=alpha, method=method)[0]).reshape(
        pvalues.shape
    )


@pytest.mark.parametrize("m", [1, 2, 7, 100, 1000])
@pytest.mark.parametrize("alpha", [0.05, 0.3])
def test_sort_based_corrections_match_statsmodels_with_ties(m: int, alpha: float) -> None:
    rng = np.random.default_rng(m)
    for levels in (3, 20, None):
        pvalues = rng.uniform(0, 3 * alpha / m, size=m)
        if levels is not None:  # heavy ties
            pvalues = np.round(pvalues * levels * m / alpha) / (levels * m / alpha)
        np.testing.assert_array_equal(
            holm_reject(pvalues, alpha), _statsmodels(pvalues, alpha, "holm")
        )
        np.testing.assert_array_equal(
            bonferroni_reject(pvalues, alpha), _statsmodels(pvalues, alpha, "bonferroni")
        )


def test_holm_on_exact_threshold_values() -> None:
    # p_(j) equal to alpha / (m - j + 1) exactly are rejected (<=); one above stops the procedure.
    alpha, m = 0.05, 4
    thresholds = alpha / np.arange(m, 0, -1)
    np.testing.assert_array_equal(holm_reject(thresholds, alpha), [True] * 4)
    bumped = thresholds.copy()
    bumped[1] = np.nextafter(bumped[1], 1.0)
    np.testing.assert_array_equal(holm_reject(bumped, alpha), [True, False, False, False])
    np.testing.assert_array_equal(holm_reject(bumped, alpha), _statsmodels(bumped, alpha, "holm"))


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=1, max_size=120),
    n_extra=st.integers(0, 20),
    tau=st.sampled_from([0.51, 0.6, 0.75, 0.9]),
    alpha=st.sampled_from([0.5, 0.1, 0.05, 0.001]),
    method=st.sampled_from(["holm", "bonferroni"]),
)
def test_reject_by_count_matches_sort_based(
    counts: list[int], n_extra: int, tau: float, alpha: float, method: str
) -> None:
    """Histogram form == sort form on the per-pixel p-values (the sort form is pinned to
    statsmodels above; statsmodels itself is too slow per call, it runs gc.collect(), for
    hypothesis-many examples — test_stats_certify checks certify_pixels against it directly)."""
    k = np.array(counts)
    n = int(k.max()) + n_extra if k.max() > 0 else 1 + n_extra
    table = pvalue_table(n, tau)
    reject_k = reject_by_count(np.bincount(k, minlength=n + 1), table, alpha, method)  # type: ignore[arg-type]
    pvalues = stats.binom.sf(k - 1, n, tau)
    reference = holm_reject if method == "holm" else bonferroni_reject
    np.testing.assert_array_equal(reject_k[k], reference(pvalues, alpha))


def test_reject_by_count_with_tied_pvalues_across_counts() -> None:
    # Distinct counts may share a p-value (e.g. both underflow to 0): ties across groups.
    table = np.array([1.0, 0.5, 0.02, 0.0, 0.0])
    histogram = np.array([1, 2, 3, 4, 5])
    k = np.repeat(np.arange(5), histogram)
    for alpha in (0.01, 0.06, 0.3, 0.99):
        for method in ("holm", "bonferroni"):
            np.testing.assert_array_equal(
                reject_by_count(histogram, table, alpha, method)[k],  # type: ignore[arg-type]
                _statsmodels(table[k], alpha, method),
            )


def test_reject_by_count_empty_and_validation() -> None:
    assert not reject_by_count(np.zeros(3, dtype=np.int64), np.ones(3), 0.05, "holm").any()
    with pytest.raises(ValueError, match="correction"):
        reject_by_count(np.ones(3, dtype=np.int64), np.ones(3), 0.05, "fdr_bh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="histogram"):
        reject_by_count(np.ones(3, dtype=np.int64), np.ones(4), 0.05, "holm")
    with pytest.raises(ValueError, match="histogram"):
        reject_by_count(np.array([1, -1, 0]), np.ones(3), 0.05, "holm")
    with pytest.raises(ValueError, match="alpha"):
        holm_reject(np.array([0.1]), 1.0)
    with pytest.raises(ValueError, match="pvalues"):
        bonferroni_reject(np.array([0.1, 1.5]), 0.05)


def test_reject_by_count_step_down_stops_at_first_failure() -> None:
    # sorted p: 0.02, 0.025, 0.04 against thresholds 0.05/3, 0.05/2, 0.05/1: the first fails, so
    # nothing is rejected, although the later two pass their own thresholds.
    table = np.array([0.04, 0.025, 0.02])
    histogram = np.array([1, 1, 1])
    assert not reject_by_count(histogram, table, 0.05, "holm").any()
    np.testing.assert_array_equal(_statsmodels(table, 0.05, "holm"), [False] * 3)


def test_reject_by_count_rejects_p_equal_to_threshold() -> None:
    # p_(j) == alpha / (m - j + 1) exactly is rejected (<=), as in statsmodels.
    alpha = 0.05
    table = np.array([alpha / 1, alpha / 3, alpha / 5])  # groups of 2, 2, 1 pixels (m = 5)
    histogram = np.array([1, 2, 2])
    k = np.repeat(np.arange(3), histogram)
    for method in ("holm", "bonferroni"):
        got = reject_by_count(histogram, table, alpha, method)[k]  # type: ignore[arg-type]
        np.testing.assert_array_equal(got, _statsmodels(table[k], alpha, method))
    assert reject_by_count(histogram, table, alpha, "holm").all()
