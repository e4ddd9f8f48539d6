"""Sequential certification: the look schedule, the stopping rule, and a seeded Monte-Carlo test
that the family-wise false-certificate rate over all looks stays <= alpha for any stopping rule.

Monte-Carlo setup (like test_stats_soundness.py): each trial is one image of M = 64 pixels; null
pixels have a true agreement probability at or just below tau, so certifying one is a false
certificate. Counts at the looks are prefix sums of per-sample agreements (drawn as binomial
increments between looks, the same law as reusing the earlier samples). The observed number of
trials with a false certificate must stay <= the (1 - 1e-6) quantile of Bin(T, alpha): a correct
procedure fails this seeded test with probability < 1e-6 over seeds.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats

from certseg.stats import certify_pixels, count_agreement
from certseg.stats.sequential import (
    LookSchedule,
    can_improve,
    certify_at_look,
    counts_at_looks,
    run_sequential,
)

TAU, ALPHA, SIGMA = 0.75, 0.05, 0.25
SIDE = 8  # M = 64 pixels
TRIALS = 4000
TOLERANCE_LEVEL = 1e-6
LOOKS = (25, 50, 100)


# ---------------------------------------------------------------------------------------------
# The schedule


def test_equal_split_sums_to_alpha_and_validates() -> None:
    schedule = LookSchedule.equal((25, 50, 100), 0.1)
    assert schedule.alphas == pytest.approx((0.1 / 3,) * 3)
    assert schedule.num_looks == 3 and schedule.n_max == 100 and schedule.alpha == 0.1


def test_weighted_split() -> None:
    schedule = LookSchedule.weighted((60, 100), 0.001, (1, 3))
    assert schedule.alphas == pytest.approx((0.00025, 0.00075))
    assert sum(schedule.alphas) <= 0.001 * (1 + 1e-12)


def test_fixed_schedule_is_the_fixed_n_certificate() -> None:
    rng = np.random.default_rng(3)
    counts = rng.binomial(100, 0.97, size=(6, 6))
    labels = rng.integers(0, 4, size=(6, 6))
    result = run_sequential(labels, [counts], LookSchedule.fixed(100, ALPHA), tau=TAU, sigma=SIGMA)
    direct = certify_pixels(labels, counts, 100, alpha=ALPHA, tau=TAU, sigma=SIGMA)
    assert result.look == 0 and result.samples_used == 100 and result.reason == "last_look"
    assert np.array_equal(result.certificate.labels, direct.labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_counts": (), "alphas": (), "alpha": 0.05}, "at least one look"),
        ({"sample_counts": (50, 50), "alphas": (0.01, 0.01), "alpha": 0.05}, "strictly increasing"),
        ({"sample_counts": (50, 25), "alphas": (0.01, 0.01), "alpha": 0.05}, "strictly increasing"),
        ({"sample_counts": (0, 25), "alphas": (0.01, 0.01), "alpha": 0.05}, "integers >= 1"),
        ({"sample_counts": (2.5, 25), "alphas": (0.01, 0.01), "alpha": 0.05}, "integers >= 1"),
        ({"sample_counts": (True, 25), "alphas": (0.01, 0.01), "alpha": 0.05}, "integers >= 1"),
        ({"sample_counts": (25, 50), "alphas": (0.01,), "alpha": 0.05}, "one level per look"),
        ({"sample_counts": (25, 50), "alphas": (0.03, 0.03), "alpha": 0.05}, "sum to at most"),
        ({"sample_counts": (25, 50), "alphas": (0.0, 0.01), "alpha": 0.05}, r"alphas\[0\]"),
        ({"sample_counts": (25,), "alphas": (0.01,), "alpha": 1.5}, "alpha must be in"),
    ],
)
def test_schedule_validation_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LookSchedule(**kwargs)  # type: ignore[arg-type]


def test_weighted_refuses_bad_weights() -> None:
    with pytest.raises(ValueError, match="one entry per look"):
        LookSchedule.weighted((25, 50), 0.05, (1.0,))
    with pytest.raises(ValueError, match="finite and > 0"):
        LookSchedule.weighted((25, 50), 0.05, (1.0, 0.0))
    with pytest.raises(ValueError, match="finite and > 0"):
        LookSchedule.weighted((25, 50), 0.05, (1.0, float("nan")))


def test_min_counts_match_a_scipy_loop() -> None:
    schedule = LookSchedule.weighted((10, 25, 60, 100), 0.001, (1, 1, 2, 4))
    for tau in (0.6, 0.75, 0.9):
        expected = []
        for n, a in zip(schedule.sample_counts, schedule.alphas, strict=True):
            k = next((k for k in range(n + 1) if stats.binom.sf(k - 1, n, tau) <= a), n + 1)
            expected.append(k)
        assert schedule.min_counts(tau) == tuple(expected)
    assert schedule.min_counts(0.9)[0] == 11  # n = 10 cannot certify tau = 0.9 at 1.25e-4


def test_min_count_is_reached_by_holm_only_in_the_loosest_case() -> None:
    """k = min_count is certified when every other pixel is certified first (Holm's last step at
    level alpha_l); k = min_count - 1 is never certified, whatever the other pixels do."""
    schedule = LookSchedule.equal((40, 200), 0.05)
    n, a = schedule.sample_counts[1], schedule.alphas[1]
    k_min = schedule.min_counts(TAU)[1]
    labels = np.zeros((2, 2), dtype=np.int64)
    for k, certified in ((k_min, True), (k_min - 1, False)):
        counts = np.array([[n, n], [n, k]])
        result = certify_at_look(labels, counts, n, a, tau=TAU, sigma=SIGMA)
        assert bool(result.certified[1, 1]) is certified
        assert result.certified[0].all()


# ---------------------------------------------------------------------------------------------
# The stopping rule


def test_can_improve_at_the_threshold() -> None:
    schedule = LookSchedule.equal((25, 50, 100), ALPHA)
    k_last = schedule.min_counts(TAU)[2]  # reachable at n = 100 from k + 75
    certified = np.zeros((1, 2), dtype=bool)
    certified[0, 0] = True
    for k, expected in ((k_last - 75, True), (k_last - 76, False)):
        counts = np.array([[25, k]])
        assert can_improve(certified, counts, 0, schedule, TAU) is expected
    assert not can_improve(np.ones((1, 2), bool), np.array([[25, 25]]), 0, schedule, TAU)
    assert not can_improve(certified, np.array([[100, 99]]), 2, schedule, TAU)  # last look


def test_can_improve_checks_every_later_look_not_only_the_next() -> None:
    """A pixel that cannot reach the next look's minimum may still reach a later one."""
    schedule = LookSchedule.equal((20, 40, 400), ALPHA)
    mins = schedule.min_counts(TAU)
    k = mins[2] - 380
    assert k + 20 < mins[1]  # not reachable at the next look …
    assert can_improve(np.zeros((1, 1), bool), np.array([[k]]), 0, schedule, TAU)  # … at the last


def test_cannot_improve_means_no_later_look_adds_a_pixel() -> None:
    """Property: where can_improve is False, even the best continuation (every remaining sample
    agrees with every pixel) certifies no pixel at a later look that is uncertified now."""
    rng = np.random.default_rng(5)
    schedule = LookSchedule.equal((40, 60, 80, 100), ALPHA)
    labels = np.zeros((4, 4), dtype=np.int64)
    checked = 0
    for _ in range(400):  # pixels near-certain or anywhere below tau, some near the boundary
        p = np.where(rng.random((4, 4)) < 0.5, 0.999, rng.uniform(0.0, 0.7, size=(4, 4)))
        counts = rng.binomial(40, p)
        now = certify_at_look(labels, counts, 40, schedule.alphas[0], tau=TAU, sigma=SIGMA)
        if can_improve(now.certified, counts, 0, schedule, TAU):
            continue
        checked += 1
        for j in range(1, schedule.num_looks):
            best = counts + schedule.sample_counts[j] - 40
            later = certify_at_look(
                labels, best, schedule.sample_counts[j], schedule.alphas[j], tau=TAU, sigma=SIGMA
            )
            assert not (later.certified & ~now.certified).any()
    assert checked > 50


def test_run_sequential_stops_when_nothing_can_improve_and_is_lazy() -> None:
    schedule = LookSchedule.equal(LOOKS, ALPHA)
    labels = np.zeros((3, 3), dtype=np.int64)
    pulled: list[int] = []

    def looks() -> Iterator[np.ndarray]:
        for n in LOOKS:
            pulled.append(n)
            yield np.full((3, 3), n // 5)  # agreement 0.2: hopeless everywhere

    result = run_sequential(labels, looks(), schedule, tau=TAU, sigma=SIGMA)
    assert (result.look, result.samples_used, result.reason) == (0, 25, "cannot_improve")
    assert pulled == [25]  # the sampler was never asked for the second look
    assert result.certificate.num_certified == 0
    assert result.certificate.alpha == schedule.alphas[0]


def test_run_sequential_fraction_rule() -> None:
    schedule = LookSchedule.equal((100, 200, 300, 400), ALPHA)
    labels = np.zeros((2, 2), dtype=np.int64)
    # two pixels always agree, two sit near tau and stay reachable: fraction 0.5 at every look
    counts = [np.array([[n, n], [int(0.8 * n), int(0.8 * n)]]) for n in (100, 200, 300, 400)]
    fractions = [
        certify_at_look(labels, c, n, a, tau=TAU, sigma=SIGMA).num_certified / 4
        for c, n, a in zip(counts, schedule.sample_counts, schedule.alphas, strict=True)
    ]
    assert fractions[:2] == [0.5, 0.5]
    off = run_sequential(labels, counts, schedule, tau=TAU, sigma=SIGMA, fraction_tolerance=0.0)
    on = run_sequential(labels, counts, schedule, tau=TAU, sigma=SIGMA, fraction_tolerance=0.01)
    assert (off.look, off.reason) == (3, "last_look")
    assert (on.look, on.reason) == (1, "fraction_stable")  # needs a previous look: not at 0
    assert on.certified_fractions == (0.5, 0.5)
    with pytest.raises(ValueError, match="fraction_tolerance"):
        run_sequential(labels, counts, schedule, tau=TAU, sigma=SIGMA, fraction_tolerance=2)


def test_run_sequential_refuses_inconsistent_prefixes() -> None:
    schedule = LookSchedule.equal(LOOKS, ALPHA)
    labels = np.zeros((1, 2), dtype=np.int64)
    base = np.array([[15, 15]])  # not certified at 25, still reachable at 100
    with pytest.raises(ValueError, match=r"counts_per_look\[1\] must extend"):
        run_sequential(labels, [base, np.array([[14, 40]])], schedule, tau=TAU, sigma=SIGMA)
    with pytest.raises(ValueError, match=r"counts_per_look\[1\] must extend"):
        run_sequential(labels, [base, np.array([[41, 40]])], schedule, tau=TAU, sigma=SIGMA)
    with pytest.raises(ValueError, match="ended after 2 looks"):
        run_sequential(labels, [base, base + 25], schedule, tau=TAU, sigma=SIGMA)


def test_counts_at_looks_are_prefix_counts() -> None:
    rng = np.random.default_rng(9)
    maps = rng.integers(0, 3, size=(30, 5, 4))
    labels = rng.integers(0, 3, size=(5, 4))
    got = counts_at_looks(maps, labels, (5, 12, 30))
    for n, counts in zip((5, 12, 30), got, strict=True):
        assert np.array_equal(counts, count_agreement(maps[:n], labels))
    with pytest.raises(ValueError, match="fewer than the last look"):
        counts_at_looks(maps, labels, (5, 31))


# ---------------------------------------------------------------------------------------------
# Monte-Carlo: family-wise error over all looks <= alpha, whatever the stopping rule


def _upper_limit(trials: int = TRIALS) -> int:
    return int(stats.binom.ppf(1 - TOLERANCE_LEVEL, trials, ALPHA))


def _look_counts(p: np.ndarray, looks: tuple[int, ...], seed: int) -> np.ndarray:
    """(TRIALS, L, SIDE, SIDE) agreement counts at each look: cumulative sums of independent
    binomial increments over the samples between looks (prefix reuse)."""
    rng = np.random.default_rng(seed)
    steps = np.diff((0, *looks))
    increments = rng.binomial(
        steps[None, :, None, None], p[None, None], (TRIALS, len(looks), *p.shape)
    )
    return np.cumsum(increments, axis=1)


def _per_look(
    counts: np.ndarray, schedule: LookSchedule, null: np.ndarray, correction: str
) -> tuple[np.ndarray, np.ndarray]:
    """(TRIALS, L) number of null pixels each look's own certificate certifies, and (TRIALS, L)
    whether that certificate certifies any pixel at all."""
    labels = np.zeros(null.shape, dtype=np.int64)
    false = np.zeros(counts.shape[:2], dtype=np.int64)
    certified_any = np.zeros(counts.shape[:2], dtype=bool)
    for t in range(counts.shape[0]):
        for look, (n, a) in enumerate(zip(schedule.sample_counts, schedule.alphas, strict=True)):
            cert = certify_at_look(
                labels,
                counts[t, look],
                n,
                a,
                tau=TAU,
                sigma=SIGMA,
                correction=correction,  # type: ignore[arg-type]
            )
            false[t, look] = int(np.count_nonzero(cert.certified & null))
            certified_any[t, look] = cert.num_certified > 0
    return false, certified_any


def _profile(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(true agreement probabilities p, null mask): every pixel null, or half of them true."""
    rng = np.random.default_rng(11)
    p = rng.uniform(TAU - 0.02, TAU, size=(SIDE, SIDE))
    p[::2, ::2] = TAU
    null = np.ones((SIDE, SIDE), dtype=bool)
    if name == "half_true":
        null[:, ::2] = False
        p[~null] = 0.97  # these pixels are certified correctly and make Holm's later steps looser
    return p, null


@pytest.mark.parametrize("correction", ["holm", pytest.param("bonferroni", marks=pytest.mark.slow)])
@pytest.mark.parametrize("profile", ["all_null", "half_true"])
def test_family_wise_error_over_looks_at_most_alpha_for_adversarial_stopping(
    correction: str, profile: str
) -> None:
    """Three stopping rules on the same draws, each must keep FWER <= alpha:
    the shipped rule (with a fraction tolerance); 'stop at the first look that certifies a
    pixel'; and the oracle 'stop at the look with the most false certificates', which knows the
    truth — its error event is the union over looks, the worst any rule can do."""
    p, null = _profile(profile)
    schedule = LookSchedule.equal(LOOKS, ALPHA)
    counts = _look_counts(p, LOOKS, seed=2026)
    false, certified_any = _per_look(counts, schedule, null, correction)
    limit = _upper_limit()

    oracle = int((false.max(axis=1) > 0).sum())  # = P[some look certifies a null pixel]
    assert oracle <= limit, f"oracle stopping: {oracle}/{TRIALS} trials with a false certificate"

    first = np.where(certified_any.any(axis=1), certified_any.argmax(axis=1), len(LOOKS) - 1)
    first_any = int((false[np.arange(TRIALS), first] > 0).sum())

    labels = np.zeros(null.shape, dtype=np.int64)
    shipped = 0
    for t in range(TRIALS):
        result = run_sequential(
            labels,
            list(counts[t]),
            schedule,
            tau=TAU,
            sigma=SIGMA,
            correction=correction,  # type: ignore[arg-type]
            fraction_tolerance=0.02,
        )
        shipped += int(np.count_nonzero(result.certificate.certified & null) > 0)
    assert first_any <= oracle and shipped <= oracle  # any rule's error event is in the union
    assert first_any <= limit and shipped <= limit
    assert oracle > 0  # the looks do err sometimes: the bound is exercised, not vacuous


def test_monte_carlo_has_power_against_full_alpha_at_every_look() -> None:
    """The same check fails a procedure that tests every look at the full alpha (no split): with
    the oracle stopping rule its false-certificate rate is well above alpha."""
    p, null = _profile("all_null")
    counts = _look_counts(p, LOOKS, seed=2026)
    unsplit, _ = _per_look(counts, LookSchedule(LOOKS, (ALPHA,) * 3, 3 * ALPHA), null, "holm")
    assert int((unsplit.max(axis=1) > 0).sum()) > _upper_limit()
    assert _upper_limit() / TRIALS < 0.07  # the tolerance is tight: alpha = 0.05 plus < 0.02


def test_sequential_certificates_do_occur_for_true_pixels() -> None:
    """With p = 0.97 > tau everywhere the sequential procedure certifies most pixels, so the low
    false rate above is not an artefact of a procedure that never certifies."""
    schedule = LookSchedule.equal(LOOKS, ALPHA)
    counts = _look_counts(np.full((SIDE, SIDE), 0.97), LOOKS, seed=7)[:200]
    labels = np.zeros((SIDE, SIDE), dtype=np.int64)
    fractions = [
        run_sequential(labels, list(c), schedule, tau=TAU, sigma=SIGMA).certificate.num_certified
        / SIDE**2
        for c in counts
    ]
    assert float(np.mean(fractions)) > 0.8
