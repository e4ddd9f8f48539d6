"""Sequential certification: certify one image at nested looks, stop when more samples cannot help.

The n estimation samples are looked at after n_1 < n_2 < ... < n_L of them (prefixes: look l
reuses every sample of the looks before it). Look l certifies with ``certify_pixels`` (Holm or
Bonferroni over the image's pixels) at its own level alpha_l, with sum_l alpha_l <= alpha. The
certificate returned is the one of the look where sampling stopped, from that look's test alone.

Guarantee (docs/method.md, "Sequential certification"): for any stopping rule, even one that looks
at the data or at the truth, P[the certificate at the stopping look certifies a pixel falsely]
<= P[some look certifies some pixel falsely] <= sum_l alpha_l <= alpha, by a union bound over the
looks of each look's family-wise error (Holm's FWER at level alpha_l). The looks must be fixed
before the data are seen; the selected labels come from separate selection samples.

Pure numpy/scipy: counts in, a certificate and the stopping look out. No randomness, no files.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from certseg.stats._checks import check_integer_array, check_open_unit
from certseg.stats.bounds import min_count_to_certify
from certseg.stats.certify import CertificationResult, certify_pixels
from certseg.stats.correction import Correction

StopReason = Literal["last_look", "cannot_improve", "fraction_stable"]

#: Relative slack when checking sum(alphas) <= alpha: an equal split alpha / L summed L times may
#: exceed alpha by a rounding error of a few ulps, which no Monte-Carlo or real use can detect.
_ALPHA_SUM_RTOL = 1e-12


@dataclass(frozen=True)
class LookSchedule:
    """Nested looks n_1 < ... < n_L at the estimation samples and the level alpha_l of each look.

    sample_counts: (L,) strictly increasing integers >= 1; the last one is the most estimation
      samples an image can get. alphas: (L,) levels in (0, 1), one per look, summing to <= alpha.
    alpha: the family-wise level the whole sequential procedure keeps, in (0, 1).
    Raises ValueError naming the field for an empty, unsorted or non-integer schedule, a level
    outside (0, 1), a length mismatch, or levels summing to more than alpha.
    """

    sample_counts: tuple[int, ...]
    alphas: tuple[float, ...]
    alpha: float

    def __post_init__(self) -> None:
        counts = tuple(self.sample_counts)
        if not counts:
            raise ValueError("sample_counts must hold at least one look, got none")
        for n in counts:
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ValueError(f"sample_counts must be integers >= 1, got {counts!r}")
        if any(b <= a for a, b in itertools.pairwise(counts)):
            raise ValueError(f"sample_counts must be strictly increasing, got {counts!r}")
        alpha = check_open_unit(self.alpha, "alpha")
        alphas = tuple(check_open_unit(a, f"alphas[{i}]") for i, a in enumerate(self.alphas))
        if len(alphas) != len(counts):
            raise ValueError(
                f"alphas must have one level per look: {len(counts)} looks "
                f"{counts!r}, got {len(alphas)} levels {alphas!r}"
            )
        if math.fsum(alphas) > alpha * (1.0 + _ALPHA_SUM_RTOL):
            raise ValueError(
                f"alphas must sum to at most alpha = {alpha}, got sum {math.fsum(alphas)!r} "
                f"for {alphas!r}"
            )
        object.__setattr__(self, "sample_counts", tuple(int(n) for n in counts))
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alpha", alpha)

    @classmethod
    def equal(cls, sample_counts: Sequence[int], alpha: float) -> LookSchedule:
        """alpha_l = alpha / L at every look."""
        return cls.weighted(sample_counts, alpha, [1.0] * len(sample_counts))

    @classmethod
    def weighted(
        cls, sample_counts: Sequence[int], alpha: float, weights: Sequence[float]
    ) -> LookSchedule:
        """alpha_l = alpha · w_l / sum(w): the configurable split (e.g. weights (1, 3) spends three
        quarters of alpha at the last of two looks). weights: (L,) finite, >= 0, sum > 0; a zero
        weight is refused (a look at level 0 certifies nothing: drop the look instead)."""
        alpha = check_open_unit(alpha, "alpha")
        w = [float(x) for x in weights]
        if len(w) != len(sample_counts):
            raise ValueError(
                f"weights must have one entry per look: {len(sample_counts)} looks, "
                f"got {len(w)} weights"
            )
        if not all(math.isfinite(x) and x > 0 for x in w):
            raise ValueError(f"weights must be finite and > 0, got {tuple(weights)!r}")
        total = math.fsum(w)
        return cls(tuple(sample_counts), tuple(alpha * x / total for x in w), alpha)

    @classmethod
    def fixed(cls, n: int, alpha: float) -> LookSchedule:
        """One look at n with all of alpha: the fixed-n certificate of ``certify_pixels``."""
        return cls((n,), (alpha,), alpha)

    @property
    def num_looks(self) -> int:
        """L, the number of looks."""
        return len(self.sample_counts)

    @property
    def n_max(self) -> int:
        """n_L, the most estimation samples one image can get."""
        return self.sample_counts[-1]

    def min_counts(self, tau: float) -> tuple[int, ...]:
        """(L,) the smallest agreement count that can be certified at each look: the smallest k
        with P[Bin(n_l, tau) >= k] <= alpha_l (Holm's last, loosest threshold, whatever the other
        pixels' counts), n_l + 1 when none. A pixel below it at look l is never certified there."""
        tau = check_open_unit(tau, "tau", low=0.5)
        return tuple(
            min_count_to_certify(n, tau, a)
            for n, a in zip(self.sample_counts, self.alphas, strict=True)
        )


def certify_at_look(
    labels: np.ndarray,
    counts_prefix: np.ndarray,
    n_l: int,
    alpha_l: float,
    *,
    tau: float,
    sigma: float,
    correction: Correction = "holm",
) -> CertificationResult:
    """The certificate of one look: ``certify_pixels`` on the counts of the first n_l estimation
    samples, at the look's level alpha_l.

    labels: (H, W) selected classes (from the separate selection samples, fixed across looks).
    counts_prefix: (H, W) agreement counts k_i in [0, n_l] among estimation samples 0 .. n_l - 1.
    Guarantee: with probability >= 1 - alpha_l every pixel this look certifies is correct (the
    fixed-n certificate with n = n_l; see ``certify_pixels``).
    """
    return certify_pixels(
        labels, counts_prefix, n_l, alpha=alpha_l, tau=tau, sigma=sigma, correction=correction
    )


def can_improve(
    certified: np.ndarray, counts: np.ndarray, look: int, schedule: LookSchedule, tau: float
) -> bool:
    """Whether some pixel not certified at ``look`` could still be certified at a later look.

    certified: (H, W) bool, the pixels certified at look ``look`` (0-based). counts: (H, W)
    agreement counts among the first n_look samples. A pixel with count k can have at most
    k + (n_j - n_look) at a later look j, and is certifiable there only if that reaches
    ``schedule.min_counts(tau)[j]``. False means: even if every remaining sample agreed with
    every uncertified pixel's label, no later look could certify any of them (so more samples
    cannot add a pixel; they could only remove one). Counts only; no randomness.
    """
    if not 0 <= look < schedule.num_looks:
        raise ValueError(f"look must be in [0, {schedule.num_looks}), got {look}")
    later = range(look + 1, schedule.num_looks)
    if not later:
        return False
    mask = np.asarray(certified, dtype=bool)
    k = check_integer_array(counts, "counts")
    if mask.shape != k.shape:
        raise ValueError(
            f"certified and counts must have the same shape, got {mask.shape} and {k.shape}"
        )
    uncertified = k[~mask]
    if uncertified.size == 0:
        return False
    best = int(uncertified.max())  # the uncertified pixel closest to any threshold
    n_now = schedule.sample_counts[look]
    min_counts = schedule.min_counts(tau)
    return any(best + schedule.sample_counts[j] - n_now >= min_counts[j] for j in later)


@dataclass(frozen=True, eq=False)
class SequentialResult:
    """Where sequential certification stopped and the certificate of that look.

    look: 0-based index of the stopping look. samples_used: n_look, the estimation samples used
    (the selection samples n0 come on top). reason: why it stopped ("last_look": no look is left;
    "cannot_improve": no uncertified pixel can reach a later look's minimum count;
    "fraction_stable": the certified fraction changed by less than the tolerance since the
    previous look). certificate: the certificate of the stopping look only (level alpha_look).
    certified_fractions: (look + 1,) certified fraction of the image at each look up to the stop.
    """

    look: int
    samples_used: int
    reason: StopReason
    certificate: CertificationResult
    certified_fractions: tuple[float, ...] = field(default=())


def stop_reason(
    look: int,
    certificate: CertificationResult,
    counts: np.ndarray,
    schedule: LookSchedule,
    previous_fraction: float | None,
    fraction_tolerance: float,
) -> StopReason | None:
    """The deterministic stopping rule at ``look`` (0-based), from counts only; None: go on.

    Stops at the last look; when no uncertified pixel can reach any later look's minimum count
    (``can_improve`` is False); or, from the second look on, when the certified fraction moved
    by less than ``fraction_tolerance`` since the previous look (0 disables this criterion).
    The rule never affects validity (docs/method.md): any rule keeps the union bound.
    """
    if look == schedule.num_looks - 1:
        return "last_look"
    if not can_improve(certificate.certified, counts, look, schedule, certificate.tau):
        return "cannot_improve"
    fraction = certificate.num_certified / certificate.num_pixels
    if previous_fraction is not None and abs(fraction - previous_fraction) < fraction_tolerance:
        return "fraction_stable"
    return None


def check_fraction_tolerance(value: object) -> float:
    """Return ``value`` as a float; ValueError naming fraction_tolerance unless in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"fraction_tolerance must be a real number in [0, 1], got {value!r}")
    out = float(value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"fraction_tolerance must be in [0, 1], got {value!r}")
    return out


def run_sequential(
    labels: np.ndarray,
    counts_per_look: Iterable[np.ndarray],
    schedule: LookSchedule,
    *,
    tau: float,
    sigma: float,
    correction: Correction = "holm",
    fraction_tolerance: float = 0.0,
) -> SequentialResult:
    """Certify one image look by look and stop by ``stop_reason``.

    labels: (H, W) selected classes. counts_per_look: (H, W) agreement counts among the first n_l
    estimation samples, one per look in order; it is consumed lazily (a generator that draws
    samples up to n_l before yielding is asked for look l + 1 only when sampling goes on), so a
    sampler can stop drawing where this stops. The counts must be prefix-consistent: each look's
    count is at least the previous one and grows by at most n_l - n_{l-1} (ValueError otherwise,
    naming the look). Returns the stopping look, the samples used and that look's certificate.
    Guarantee: with probability >= 1 - schedule.alpha over the estimation noise, every pixel the
    returned certificate certifies is correct (union bound over looks, docs/method.md).
    """
    tolerance = check_fraction_tolerance(fraction_tolerance)
    previous_counts: np.ndarray | None = None
    previous_fraction: float | None = None
    fractions: list[float] = []
    iterator = iter(counts_per_look)
    for look, (n_l, alpha_l) in enumerate(
        zip(schedule.sample_counts, schedule.alphas, strict=True)
    ):
        try:
            counts = check_integer_array(next(iterator), f"counts_per_look[{look}]")
        except StopIteration:
            raise ValueError(
                f"counts_per_look ended after {look} looks; the schedule has "
                f"{schedule.num_looks} looks {schedule.sample_counts!r}"
            ) from None
        if previous_counts is not None:
            _check_prefix(previous_counts, counts, look, schedule)
        certificate = certify_at_look(
            labels, counts, n_l, alpha_l, tau=tau, sigma=sigma, correction=correction
        )
        fraction = certificate.num_certified / certificate.num_pixels
        fractions.append(fraction)
        reason = stop_reason(look, certificate, counts, schedule, previous_fraction, tolerance)
        if reason is not None:
            return SequentialResult(look, n_l, reason, certificate, tuple(fractions))
        previous_counts, previous_fraction = counts, fraction
    raise AssertionError("unreachable: the last look always stops")  # pragma: no cover


def _check_prefix(before: np.ndarray, after: np.ndarray, look: int, schedule: LookSchedule) -> None:
    if before.shape != after.shape:
        raise ValueError(
            f"counts_per_look[{look}] must have the shape of the previous look, "
            f"{before.shape}, got {after.shape}"
        )
    step = schedule.sample_counts[look] - schedule.sample_counts[look - 1]
    growth = after.astype(np.int64) - before
    if growth.size and (int(growth.min()) < 0 or int(growth.max()) > step):
        raise ValueError(
            f"counts_per_look[{look}] must extend the previous look's counts by 0 .. {step} "
            f"(the samples between n = {schedule.sample_counts[look - 1]} and "
            f"{schedule.sample_counts[look]}), got growth in "
            f"[{int(growth.min())}, {int(growth.max())}]"
        )


def counts_at_looks(
    estimation: np.ndarray, labels: np.ndarray, sample_counts: Sequence[int]
) -> list[np.ndarray]:
    """Cumulative agreement counts of every look from per-sample class maps.

    estimation: (N, H, W) integer class maps of the estimation samples in sample order, N >= the
    last look. labels: (H, W) selected classes. Returns one (H, W) int32 array per look: the
    number of maps among the first n_l that equal ``labels``. Memory O(H · W) per look.
    """
    maps = check_integer_array(estimation, "estimation")
    selected = check_integer_array(labels, "labels")
    if maps.ndim != 3 or maps.shape[1:] != selected.shape:
        raise ValueError(
            f"estimation must have shape (N, H, W) with (H, W) = labels.shape "
            f"{selected.shape}, got {maps.shape}"
        )
    looks = [int(n) for n in sample_counts]
    if looks and looks[-1] > maps.shape[0]:
        raise ValueError(
            f"estimation holds {maps.shape[0]} samples, fewer than the last look n = {looks[-1]}"
        )
    out: list[np.ndarray] = []
    running = np.zeros(selected.shape, dtype=np.int32)
    done = 0
    for n in looks:
        if n < done:
            raise ValueError(f"sample_counts must be increasing, got {tuple(looks)!r}")
        for sample in maps[done:n]:
            running += sample == selected
        done = n
        out.append(running.copy())
    return out
