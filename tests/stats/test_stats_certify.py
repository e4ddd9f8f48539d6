"""certify_pixels and pixel_radii against statsmodels, exact fractions and per-pixel loops."""

from __future__ import annotations

from fractions import Fraction
from functools import cache
from math import comb
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from statsmodels.stats.multitest import multipletests

from certseg.stats import (
    ABSTAIN,
    CertificationResult,
    certify_pixels,
    min_count_to_certify,
    pixel_radii,
)


@cache
def _exact_pvalue(k: int, n: int, tau: Fraction) -> Fraction:
    """P[Bin(n, tau) >= k] in exact rational arithmetic."""
    return sum(
        (comb(n, j) * tau**j * (1 - tau) ** (n - j) for j in range(k, n + 1)), start=Fraction(0)
    )


def _certify_loop(
    labels: np.ndarray, counts: np.ndarray, n: int, alpha: Fraction, tau: Fraction, method: str
) -> np.ndarray:
    """Reference written from METHOD §3 with exact fractions and a per-pixel Python loop."""
    height, width = counts.shape
    pixels = [(i, j) for i in range(height) for j in range(width)]
    pvalue = {px: _exact_pvalue(int(counts[px]), n, tau) for px in pixels}
    m = len(pixels)
    rejected: set[tuple[int, int]] = set()
    if method == "bonferroni":
        rejected = {px for px in pixels if pvalue[px] <= alpha / m}
    else:
        for j, px in enumerate(sorted(pixels, key=lambda q: pvalue[q]), start=1):
            if pvalue[px] > alpha / (m - j + 1):
                break
            rejected.add(px)
    out = np.full((height, width), ABSTAIN, dtype=np.int64)
    for px in rejected:
        out[px] = labels[px]
    return out


def _random_counts(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """Counts concentrated near n (where certificates happen) with a tail of low ones."""
    p = rng.choice([0.3, 0.7, 0.8, 0.9, 0.97, 1.0], size=shape)
    return rng.binomial(n, p)


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
@pytest.mark.parametrize(
    ("n", "tau", "alpha", "shape"),
    [
        (100, Fraction(3, 4), Fraction(1, 20), (8, 8)),
        (100, Fraction(3, 4), Fraction(1, 1000), (5, 13)),
        (50, Fraction(9, 10), Fraction(1, 10), (6, 6)),
        (30, Fraction(51, 100), Fraction(1, 20), (4, 4)),
        (10, Fraction(3, 5), Fraction(1, 2), (3, 3)),
    ],
)
def test_certify_matches_exact_loop_and_statsmodels(
    method: str, n: int, tau: Fraction, alpha: Fraction, shape: tuple[int, int]
) -> None:
    rng = np.random.default_rng(n + shape[0])
    for _ in range(3):
        counts = _random_counts(rng, shape, n)
        labels = rng.integers(0, 19, size=shape)
        result = certify_pixels(
            labels, counts, n, alpha=float(alpha), tau=float(tau), sigma=0.25, correction=method
        )
        np.testing.assert_array_equal(
            result.labels, _certify_loop(labels, counts, n, alpha, tau, method)
        )
        pvalues = stats.binom.sf(counts - 1, n, float(tau))
        np.testing.assert_array_equal(result.pvalues, pvalues)
        expected = multipletests(pvalues.ravel(), alpha=float(alpha), method=method)[0]
        np.testing.assert_array_equal(result.certified.ravel(), expected)


def test_holm_step_down_stops_at_first_failure_on_binomial_pvalues() -> None:
    """9 pixels with k = 84 fail their first Holm step (p > alpha / 10); the one pixel with k = 83
    would pass its own threshold alpha / 1, but the procedure has already stopped."""
    n, tau, alpha = 100, 0.75, 0.05
    p84, p83 = stats.binom.sf([83, 82], n, tau)
    assert alpha / 10 < p84 < p83 <= alpha  # the situation the test is about
    counts = np.full((1, 10), 84)
    counts[0, 3] = 83
    result = certify_pixels(np.zeros_like(counts), counts, n, alpha=alpha, tau=tau, sigma=1)
    assert not result.certified.any()
    assert not multipletests(result.pvalues.ravel(), alpha=alpha, method="holm")[0].any()


def test_result_fields() -> None:
    counts = np.array([[100, 90], [60, 0]])
    labels = np.array([[3, 0], [7, 255]], dtype=np.uint8)  # uint8 labels, any class index
    result = certify_pixels(labels, counts, 100, alpha=0.001, tau=0.75, sigma=0.5)
    assert isinstance(result, CertificationResult)
    np.testing.assert_array_equal(result.labels, [[3, 0], [ABSTAIN, ABSTAIN]])
    assert result.labels.dtype == np.int32
    np.testing.assert_array_equal(result.certified, result.labels != ABSTAIN)
    assert result.pvalues.dtype == np.float64
    assert result.radius == pytest.approx(0.5 * NormalDist().inv_cdf(0.75), rel=1e-12)
    assert result.radius == pytest.approx(0.337, abs=5e-4)  # METHOD §5
    assert (result.alpha, result.tau, result.sigma, result.n) == (0.001, 0.75, 0.5, 100)
    assert result.correction == "holm"
    assert result.num_pixels == 4 and result.num_certified == 2
    assert result.min_count == min_count_to_certify(100, 0.75, 0.001) == 89
    for array in (result.labels, result.certified, result.pvalues):
        assert not array.flags.writeable
    with pytest.raises(AttributeError):
        result.radius = 1.0  # type: ignore[misc]


def test_min_count_semantics() -> None:
    rng = np.random.default_rng(5)
    n, tau, alpha = 100, 0.75, 0.05
    counts = rng.integers(70, n + 1, size=(16, 16))
    labels = np.zeros_like(counts)
    bonf = certify_pixels(labels, counts, n, alpha=alpha, tau=tau, sigma=1, correction="bonferroni")
    np.testing.assert_array_equal(bonf.certified, counts >= bonf.min_count)
    assert bonf.min_count == min_count_to_certify(n, tau, alpha / 256)
    holm = certify_pixels(labels, counts, n, alpha=alpha, tau=tau, sigma=1, correction="holm")
    assert holm.min_count == min_count_to_certify(n, tau, alpha)
    assert np.all(counts[holm.certified] >= holm.min_count)
    assert np.all(holm.certified[counts >= bonf.min_count])
    # a 1×1 image: m = 1, Holm = Bonferroni, certified iff k >= min_count(alpha)
    for k in range(n + 1):
        one = certify_pixels(np.array([[4]]), np.array([[k]]), n, alpha=alpha, tau=tau, sigma=1)
        assert bool(one.certified[0, 0]) == (k >= one.min_count)
        assert one.labels[0, 0] == (4 if k >= one.min_count else ABSTAIN)


def test_edge_cases_k_zero_k_n_and_n_one() -> None:
    zeros = certify_pixels(
        np.zeros((3, 3), int), np.zeros((3, 3), int), 100, alpha=0.5, tau=0.6, sigma=1
    )
    assert not zeros.certified.any()
    np.testing.assert_array_equal(zeros.pvalues, 1.0)
    full = certify_pixels(
        np.ones((3, 3), int), np.full((3, 3), 100), 100, alpha=0.05, tau=0.9, sigma=1
    )
    assert full.certified.all()  # 0.9**100 = 2.7e-5 <= 0.05 / 9
    np.testing.assert_allclose(full.pvalues, 0.9**100, rtol=1e-12)
    # n = 1: p-value of k = 1 is tau itself
    one = certify_pixels(
        np.zeros((2, 2), int), np.ones((2, 2), int), 1, alpha=0.05, tau=0.75, sigma=1
    )
    assert not one.certified.any() and one.min_count == 2
    lenient = certify_pixels(
        np.zeros((1, 1), int), np.ones((1, 1), int), 1, alpha=0.9, tau=0.75, sigma=1
    )
    assert lenient.certified.all() and lenient.min_count == 1


@settings(max_examples=120, deadline=None)
@given(
    counts=hnp.arrays(
        np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12), elements=st.integers(0, 60)
    ),
    tau=st.sampled_from([0.55, 0.7, 0.75, 0.9]),
    alpha=st.sampled_from([0.3, 0.05, 0.001]),
    bump=st.integers(1, 10),
    data=st.data(),
)
def test_holm_superset_of_bonferroni_and_monotone_in_k(
    counts: np.ndarray, tau: float, alpha: float, bump: int, data: st.DataObject
) -> None:
    n = 60
    labels = np.zeros_like(counts)
    holm = certify_pixels(labels, counts, n, alpha=alpha, tau=tau, sigma=0.25, correction="holm")
    bonf = certify_pixels(
        labels, counts, n, alpha=alpha, tau=tau, sigma=0.25, correction="bonferroni"
    )
    assert np.all(holm.certified[bonf.certified])
    for result in (holm, bonf):
        # within one image: certified pixels are exactly those with k above some threshold
        if result.certified.any():
            assert np.all(result.certified[counts >= counts[result.certified].min()])
    # raising some counts never removes a certificate
    mask = data.draw(hnp.arrays(np.bool_, counts.shape))
    raised = np.minimum(counts + bump * mask, n)
    for method, before in (("holm", holm), ("bonferroni", bonf)):
        after = certify_pixels(
            labels, raised, n, alpha=alpha, tau=tau, sigma=0.25, correction=method
        )  # type: ignore[arg-type]
        assert np.all(after.certified[before.certified])


def test_pvalues_only_on_request_and_counts_kept() -> None:
    """The (H, W) p-value map is built when read (once), from a copy of the counts."""
    counts = np.array([[100, 90], [60, 0]], dtype=np.int64)
    result = certify_pixels(np.zeros((2, 2), int), counts, 100, alpha=0.001, tau=0.75, sigma=0.5)
    assert "pvalues" not in vars(result)  # certification did not build it
    counts[0, 0] = 0  # the caller's array is not the result's
    np.testing.assert_array_equal(result.counts, [[100, 90], [60, 0]])
    assert not result.counts.flags.writeable
    np.testing.assert_array_equal(
        result.pvalues, stats.binom.sf(np.array([[100, 90], [60, 0]]) - 1, 100, 0.75)
    )
    assert result.pvalues is result.pvalues  # computed once


@pytest.mark.parametrize("method", ["holm", "bonferroni"])
def test_certify_with_pvalues_tied_across_counts(method: str) -> None:
    """n = 3000, tau = 0.51: P[Bin(n, tau) >= k] underflows to 0.0 for the top counts, so several
    counts share one p-value; the per-count threshold still gives statsmodels' decisions."""
    n, tau, alpha = 3000, 0.51, 0.05
    rng = np.random.default_rng(11)
    counts = rng.choice(np.r_[1550:1700, 2900:3001], size=(9, 11))
    result = certify_pixels(
        np.ones_like(counts), counts, n, alpha=alpha, tau=tau, sigma=1, correction=method
    )  # type: ignore[arg-type]
    pvalues = stats.binom.sf(counts - 1, n, tau)
    assert np.count_nonzero(pvalues == 0.0) > 1
    np.testing.assert_array_equal(result.pvalues, pvalues)
    expected = multipletests(pvalues.ravel(), alpha=alpha, method=method)[0]
    np.testing.assert_array_equal(result.certified.ravel(), expected)
    np.testing.assert_array_equal(result.labels, np.where(result.certified, 1, ABSTAIN))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_count_range_checked_for_every_dtype(dtype: type) -> None:
    """The range check rides on the histogram (and a plain check where bincount cannot cast)."""
    labels = np.zeros((2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match=r"^counts must be <= n = 5, got a maximum of 6"):
        certify_pixels(labels, np.array([[6, 0], [1, 2]], dtype=dtype), 5, **GOOD)  # type: ignore[arg-type]
    if np.dtype(dtype).kind == "i":
        with pytest.raises(ValueError, match=r"^counts must be >= 0, got a minimum of -2"):
            certify_pixels(labels, np.array([[-2, 0], [1, 2]], dtype=dtype), 5, **GOOD)  # type: ignore[arg-type]


def test_labels_up_to_int32_max_and_abstain() -> None:
    labels = np.array([[2**31 - 1, 0, 2**31 - 1]], dtype=np.int64)
    counts = np.array([[100, 100, 10]])
    result = certify_pixels(labels, counts, 100, alpha=0.001, tau=0.75, sigma=0.5)
    np.testing.assert_array_equal(result.labels, [[2**31 - 1, 0, ABSTAIN]])


def test_pixel_radii_match_loop() -> None:
    rng = np.random.default_rng(6)
    n, alpha, sigma = 100, 0.05, 0.25
    counts = _random_counts(rng, (6, 7), n)
    counts[0, 0], counts[0, 1] = n, 0
    radii = pixel_radii(counts, n, alpha=alpha, sigma=sigma)
    m = counts.size
    expected = np.zeros(counts.shape)
    for (i, j), k in np.ndenumerate(counts):
        if k > 0:
            p_lower = stats.beta.ppf(alpha / m, k, n - k + 1)
            if p_lower > 0.5:
                expected[i, j] = sigma * NormalDist().inv_cdf(p_lower)
    np.testing.assert_allclose(radii, expected, rtol=1e-9, atol=0)
    assert np.all(np.isfinite(radii)) and radii[0, 1] == 0.0
    # k = n: p_lower = (alpha / m) ** (1 / n) < 1
    assert radii[0, 0] == pytest.approx(
        sigma * NormalDist().inv_cdf((alpha / m) ** (1 / n)), rel=1e-9
    )


def test_pixel_radii_agree_with_bonferroni_certificate() -> None:
    """radius_i > sigma·Φ⁻¹(tau) <=> p_lower_i > tau <=> Bonferroni certifies pixel i (no ties)."""
    rng = np.random.default_rng(7)
    n, alpha, sigma = 100, 0.05, 0.5
    counts = rng.integers(60, n + 1, size=(20, 20))
    radii = pixel_radii(counts, n, alpha=alpha, sigma=sigma)
    for tau in (0.6, 0.75, 0.9):
        bonf = certify_pixels(
            np.zeros_like(counts),
            counts,
            n,
            alpha=alpha,
            tau=tau,
            sigma=sigma,
            correction="bonferroni",
        )
        assert 0 < bonf.num_certified < counts.size
        np.testing.assert_array_equal(radii > bonf.radius, bonf.certified)


GOOD = {"alpha": 0.05, "tau": 0.75, "sigma": 0.25}


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"tau": 0.5}, "tau"),
        ({"tau": 0.3}, "tau"),
        ({"tau": 1.0}, "tau"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"correction": "bh"}, "correction"),
        ({"n": 0}, "n"),
        ({"n": 4}, "counts"),  # counts > n
        ({"counts": np.array([[-1, 0], [0, 0]])}, "counts"),
        ({"counts": np.zeros((2, 2), dtype=np.float64)}, "counts"),
        ({"counts": np.zeros((2, 3), dtype=np.int64)}, "labels"),  # shape mismatch
        ({"counts": np.zeros(4, dtype=np.int64), "labels": np.zeros(4, int)}, "counts"),
        ({"labels": np.array([[0, -1], [0, 0]])}, "labels"),
        ({"labels": np.zeros((2, 2), dtype=np.float32)}, "labels"),
    ],
)
def test_certify_validation_names_the_argument(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {
        "labels": np.zeros((2, 2), dtype=np.int64),
        "counts": np.array([[5, 4], [0, 1]]),
        "n": 5,
        **GOOD,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name} "):
        certify_pixels(args.pop("labels"), args.pop("counts"), args.pop("n"), **args)  # type: ignore[arg-type]


def test_pixel_radii_validation() -> None:
    with pytest.raises(ValueError, match=r"^sigma "):
        pixel_radii(np.ones((2, 2), int), 5, alpha=0.05, sigma=0)
    with pytest.raises(ValueError, match=r"^alpha "):
        pixel_radii(np.ones((2, 2), int), 5, alpha=2, sigma=1)
    with pytest.raises(ValueError, match=r"^counts "):
        pixel_radii(np.full((2, 2), 6), 5, alpha=0.05, sigma=1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_integer_dtypes_of_counts_and_labels(dtype: type) -> None:
    counts = np.array([[100, 60], [95, 70]], dtype=dtype)
    labels = np.array([[1, 2], [3, 4]], dtype=dtype)
    result = certify_pixels(labels, counts, 100, alpha=0.001, tau=0.75, sigma=0.25)
    np.testing.assert_array_equal(result.labels, [[1, ABSTAIN], [3, ABSTAIN]])
    np.testing.assert_array_equal(
        pixel_radii(counts, 100, alpha=0.001, sigma=0.25),
        pixel_radii(counts.astype(np.int64), 100, alpha=0.001, sigma=0.25),
    )
