"""Seeded Monte-Carlo soundness of the certificate: the family-wise false-certificate rate <= alpha.

Each trial is one image of M = 64 pixels whose true agreement probabilities p_i are at or just below
tau, so every certificate is false (H0: p_i <= tau holds everywhere). k_i ~ Bin(n, p_i) is drawn
directly. The event "at least one pixel certified" must have probability <= alpha; over T trials the
observed count must stay <= the (1 - 1e-6) quantile of Bin(T, alpha) — the stated tolerance — so a
correct implementation fails this seeded test with probability < 1e-6 over seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from certseg.stats import certify_pixels

N, TAU, ALPHA, SIGMA = 100, 0.75, 0.05, 0.25
SIDE = 8  # M = 64 pixels
TRIALS = 4000
TOLERANCE_LEVEL = 1e-6


def _false_certificate_count(p: np.ndarray, correction: str, seed: int) -> int:
    rng = np.random.default_rng(seed)
    counts = rng.binomial(N, p, size=(TRIALS, SIDE, SIDE))
    labels = np.zeros((SIDE, SIDE), dtype=np.int64)
    return sum(
        certify_pixels(
            labels,
            k,
            N,
            alpha=ALPHA,
            tau=TAU,
            sigma=SIGMA,
            correction=correction,  # type: ignore[arg-type]
        ).num_certified
        > 0
        for k in counts
    )


def _upper_limit() -> int:
    return int(stats.binom.ppf(1 - TOLERANCE_LEVEL, TRIALS, ALPHA))


@pytest.mark.parametrize("correction", ["holm", "bonferroni"])
@pytest.mark.parametrize("profile", ["at_tau", "at_or_just_below_tau"])
def test_family_wise_false_certificate_rate_at_most_alpha(correction: str, profile: str) -> None:
    if profile == "at_tau":
        p = np.full((SIDE, SIDE), TAU)
    else:
        p = np.random.default_rng(11).uniform(TAU - 0.02, TAU, size=(SIDE, SIDE))
        p[::2, ::2] = TAU
    false = _false_certificate_count(p, correction, seed=2026)
    assert false <= _upper_limit(), f"{false}/{TRIALS} trials certified a false pixel"


def test_tolerance_has_power_against_an_uncorrected_test() -> None:
    """The same check rejects a per-pixel test at alpha without correction (rate ≈ 1 - (1-a)^64)."""
    rng = np.random.default_rng(2026)
    counts = rng.binomial(N, TAU, size=(TRIALS, SIDE * SIDE))
    per_pixel = stats.binom.sf(counts - 1, N, TAU) <= ALPHA
    assert int(per_pixel.any(axis=1).sum()) > _upper_limit()
    assert _upper_limit() / TRIALS < 0.07  # the tolerance is tight: alpha = 0.05 plus < 0.02


@pytest.mark.parametrize("correction", ["holm", "bonferroni"])
def test_certificates_do_occur_just_above_tau(correction: str) -> None:
    """With p = 0.8 > tau on every pixel the same procedure certifies in most trials (true claims),
    so the zero-ish false rate above is not an artefact of a procedure that never certifies."""
    false_free = _false_certificate_count(np.full((SIDE, SIDE), 0.8), correction, seed=7)
    assert false_free > 0.3 * TRIALS


@pytest.mark.parametrize("p_true", [0.6, 0.75, 0.9])
def test_per_pixel_radius_family_wise_false_claim_rate_at_most_alpha(p_true: float) -> None:
    """pixel_radii claims radius_i = σΦ⁻¹(p_lower_i): a claim is false when it exceeds the true
    radius σΦ⁻¹(p_i) (p_lower_i > p_i). At most an α fraction of images may hold a false claim."""
    from certseg.stats import pixel_radii

    rng = np.random.default_rng(4242)
    p = rng.uniform(p_true - 0.05, p_true, size=(SIDE, SIDE))
    p[::2, ::2] = p_true
    true_radius = SIGMA * stats.norm.ppf(p)
    counts = rng.binomial(N, p, size=(TRIALS, SIDE, SIDE))
    false = sum(
        bool((pixel_radii(k, N, alpha=ALPHA, sigma=SIGMA) > true_radius + 1e-12).any())
        for k in counts
    )
    assert false <= _upper_limit(), f"{false}/{TRIALS} images held a radius above the true one"
    claims = sum(bool((pixel_radii(k, N, alpha=ALPHA, sigma=SIGMA) > 0).any()) for k in counts)
    assert claims > 0.3 * TRIALS  # radii are claimed: the check is not vacuous
