"""Binomial p-values and Clopper-Pearson bounds against scipy / statsmodels, and their duality."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from certseg.stats import (
    binomial_pvalues,
    clopper_pearson_lower,
    lower_bound_table,
    min_count_to_certify,
    pvalue_table,
)

N_GRID = [1, 2, 5, 10, 37, 100, 500]
TAU_GRID = [0.51, 0.6, 0.75, 0.9, 0.99]
ALPHA_GRID = [0.2, 0.05, 1e-3, 1e-6]


@pytest.mark.parametrize("n", [1, 5, 20, 100])
@pytest.mark.parametrize("tau", [0.55, 0.75, 0.95])
def test_pvalues_match_scipy_binomtest(n: int, tau: float) -> None:
    k = np.arange(n + 1)
    got = binomial_pvalues(k, n, tau)
    expected = [stats.binomtest(int(kk), n, tau, alternative="greater").pvalue for kk in k]
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)
    assert got[0] == 1.0
    np.testing.assert_allclose(got[n], tau**n, rtol=1e-12)


def test_pvalues_table_lookup_equals_direct_evaluation() -> None:
    rng = np.random.default_rng(3)
    n, tau = 100, 0.75
    k = rng.integers(0, n + 1, size=(40, 50))  # larger than n + 1: answered from the table
    np.testing.assert_array_equal(binomial_pvalues(k, n, tau), stats.binom.sf(k - 1, n, tau))
    lower = clopper_pearson_lower(k, n, 0.01)
    np.testing.assert_allclose(
        lower, np.where(k == 0, 0.0, stats.beta.ppf(0.01, k, n - k + 1)), rtol=1e-12, atol=0
    )
    assert lower.shape == k.shape


@pytest.mark.parametrize("n", N_GRID)
def test_tables_are_monotone(n: int) -> None:
    for tau in TAU_GRID:
        table = pvalue_table(n, tau)
        assert table.shape == (n + 1,)
        assert table[0] == 1.0
        assert np.all(np.diff(table) <= 0)
        assert not table.flags.writeable
    for alpha in ALPHA_GRID:
        bound = lower_bound_table(n, alpha)
        assert bound[0] == 0.0
        assert np.all(np.diff(bound) > 0)
        assert bound[n] < 1.0


@pytest.mark.parametrize("n", [1, 3, 10, 100, 250])
@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.001])
def test_clopper_pearson_matches_statsmodels_two_sided_at_twice_alpha(n: int, alpha: float) -> None:
    k = np.arange(n + 1)
    got = clopper_pearson_lower(k, n, alpha)
    low, _ = proportion_confint(k, n, alpha=2 * alpha, method="beta")
    np.testing.assert_allclose(got, low, rtol=1e-12, atol=1e-300)
    assert got[0] == 0.0
    # k = n: Beta(n, 1) has cdf x**n, so the bound is alpha ** (1 / n) exactly.
    np.testing.assert_allclose(got[n], alpha ** (1.0 / n), rtol=1e-12)


def test_clopper_pearson_and_binomial_test_agree_on_every_k() -> None:
    """lower(k, n, alpha) > tau  <=>  P[Bin(n, tau) >= k] < alpha, for all k and (n, tau, alpha)."""
    checked = 0
    near_ties = 0
    for n in N_GRID:
        k = np.arange(n + 1)
        for tau in TAU_GRID:
            pvalues = binomial_pvalues(k, n, tau)
            for alpha in ALPHA_GRID:
                by_bound = clopper_pearson_lower(k, n, alpha) > tau
                by_test = pvalues < alpha
                # Exclude floating-point ties pv ≈ alpha (none occur on this grid; asserted below).
                tie = np.isclose(pvalues, alpha, rtol=1e-9, atol=0)
                near_ties += int(tie.sum())
                np.testing.assert_array_equal(by_bound[~tie], by_test[~tie], err_msg=f"{n=} {tau=}")
                checked += int((~tie).sum())
    assert near_ties == 0
    assert checked == sum(n + 1 for n in N_GRID) * len(TAU_GRID) * len(ALPHA_GRID)


def test_clopper_pearson_covers_at_one_minus_alpha() -> None:
    """Exact coverage: P_p[lower(K) <= p] >= 1 - alpha for K ~ Bin(n, p), over a grid of p."""
    n, alpha = 30, 0.05
    k = np.arange(n + 1)
    bound = clopper_pearson_lower(k, n, alpha)
    for p in np.linspace(0.01, 0.99, 99):
        coverage = stats.binom.pmf(k, n, p)[bound <= p].sum()
        assert coverage >= 1 - alpha - 1e-12


def test_min_count_to_certify_is_the_first_count_at_or_below_alpha() -> None:
    for n in [1, 10, 100]:
        for tau in [0.6, 0.75, 0.9]:
            for alpha in [0.05, 0.001]:
                pv = stats.binom.sf(np.arange(n + 1) - 1, n, tau)
                passing = [k for k in range(n + 1) if pv[k] <= alpha]
                expected = passing[0] if passing else n + 1
                assert min_count_to_certify(n, tau, alpha) == expected
    # n = 1: the best p-value is tau itself.
    assert min_count_to_certify(1, 0.75, 0.05) == 2
    assert min_count_to_certify(1, 0.75, 0.8) == 1
    # orientation from METHOD §5: n = 100, tau = 0.75
    assert min_count_to_certify(100, 0.75, 0.001) == 89


def test_scalar_and_nd_shapes() -> None:
    assert binomial_pvalues(3, 10, 0.5).shape == ()
    np.testing.assert_allclose(float(binomial_pvalues(3, 10, 0.5)), stats.binom.sf(2, 10, 0.5))
    assert float(clopper_pearson_lower(0, 10, 0.05)) == 0.0
    k = np.arange(24).reshape(2, 3, 4) % 6
    assert clopper_pearson_lower(k, 5, 0.05).shape == (2, 3, 4)
    assert binomial_pvalues(k.astype(np.uint8), 5, 0.7).shape == (2, 3, 4)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: binomial_pvalues(11, 10, 0.75), "k"),
        (lambda: binomial_pvalues(-1, 10, 0.75), "k"),
        (lambda: binomial_pvalues(np.array([1.0]), 10, 0.75), "k"),
        (lambda: binomial_pvalues(1, 0, 0.75), "n"),
        (lambda: binomial_pvalues(1, 10, 1.0), "tau"),
        (lambda: binomial_pvalues(1, 10, 0.0), "tau"),
        (lambda: clopper_pearson_lower(1, 10, 0.0), "alpha"),
        (lambda: clopper_pearson_lower(1, 10, 1.0), "alpha"),
        (lambda: clopper_pearson_lower(1, 2.5, 0.05), "n"),
        (lambda: clopper_pearson_lower(3, 2, 0.05), "k"),
        (lambda: min_count_to_certify(10, 0.75, 1.5), "alpha"),
    ],
)
def test_validation_names_the_argument(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name} "):
        call()  # type: ignore[operator]
