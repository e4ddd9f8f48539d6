"""The SegCertify certificate of one image (METHOD §3 steps 3-5) and per-pixel Cohen radii."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import special

from certseg.stats._checks import (
    check_count_n,
    check_counts,
    check_integer_array,
    check_open_unit,
    check_positive,
)
from certseg.stats.bounds import lower_bound_table, min_count_to_certify, pvalue_table
from certseg.stats.constants import ABSTAIN
from certseg.stats.correction import Correction, check_correction, reject_by_count

_INT32_MAX = int(np.iinfo(np.int32).max)


@dataclass(frozen=True, eq=False)
class CertificationResult:
    """The certificate of one image of m = H · W pixels. Arrays are read-only.

    Guarantee: with probability >= 1 - alpha over the n estimation samples' noise, every pixel with
    ``certified`` true satisfies g_i(x + delta) = labels[i] for all ||delta||_2 < radius, where
    g_i(x) = argmax_c P[f_i(x + sigma * eps) = c] (the smoothed classifier at pixel i).

    labels: (H, W) int32 certified class, ABSTAIN (-1) where not certified.
    certified: (H, W) bool, ``labels != ABSTAIN``.
    counts: (H, W) the agreement counts k_i that were certified (a copy; uint8 when n <= 255,
      else int32).
    pvalues: (H, W) float64 P[Bin(n, tau) >= k_i], the uncorrected one-sided p-value of
      H0: p_i <= tau; computed from ``counts`` on first access (certification does not need
      the map: it works on the p-value of each distinct count).
    radius: sigma · Φ⁻¹(tau), the L2 radius in [0, 1] image units, common to all certified pixels.
    min_count: the smallest agreement count k that can be certified in this image.
      - "bonferroni": the smallest k with p-value <= alpha / m; a pixel is certified iff
        k >= min_count.
      - "holm": the smallest k with p-value <= alpha (the threshold of Holm's last, loosest
        step), whatever the other pixels' counts: k >= min_count is necessary, not sufficient.
        Holm certifies every pixel Bonferroni certifies, so
        k >= min_count_to_certify(n, tau, alpha / m) is sufficient.
      n + 1 when no count can be certified (n too small for this tau and alpha).
    """

    labels: np.ndarray
    certified: np.ndarray
    counts: np.ndarray
    radius: float
    alpha: float
    tau: float
    sigma: float
    n: int
    correction: Correction
    min_count: int

    @cached_property
    def pvalues(self) -> np.ndarray:
        """(H, W) float64 P[Bin(n, tau) >= k_i] (read-only; computed once, on first access)."""
        pvalues: np.ndarray = pvalue_table(self.n, self.tau)[self.counts]
        pvalues.setflags(write=False)
        return pvalues

    @property
    def num_pixels(self) -> int:
        """m, the number of pixels in the family the correction runs over."""
        return int(self.labels.size)

    @property
    def num_certified(self) -> int:
        """Number of certified (non-abstained) pixels."""
        return int(np.count_nonzero(self.certified))


def _check_image_counts(counts: object, n: int) -> np.ndarray:
    array = check_counts(counts, n, "counts")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"counts must have shape (H, W) with H, W >= 1, got shape {array.shape}")
    return array


def certify_pixels(
    labels: np.ndarray,
    counts: np.ndarray,
    n: int,
    *,
    alpha: float,
    tau: float,
    sigma: float,
    correction: Correction = "holm",
) -> CertificationResult:
    """Certify every pixel of one image at family-wise level alpha (SegCertify, METHOD §3).

    labels: (H, W) non-negative integer selected classes ĉ_i (from ``select_labels``).
    counts: (H, W) integer agreement counts k_i in [0, n] of ĉ_i among n fresh estimation samples.
    n: number of estimation samples (>= 1). alpha in (0, 1): one-sided family-wise error level.
    tau in (0.5, 1): the agreement probability to certify. sigma > 0: noise std in [0, 1] units.
    correction: "holm" (default) or "bonferroni", over all m = H · W pixels.

    Pixel i is tested against H0: P[f_i(x + sigma·eps) = ĉ_i] <= tau with p-value
    P[Bin(n, tau) >= k_i]; rejected pixels are certified with ĉ_i at radius sigma·Φ⁻¹(tau), the
    rest get ABSTAIN. The decisions equal statsmodels ``multipletests(pvalues, alpha, correction)``.
    Cost: one histogram of the counts, one comparison with a threshold count and one labelled write,
    O(m + n); p-values come from a table per (n, tau) and Holm's order is the order of k, so no
    per-pixel sort or scipy call. The per-pixel p-value map is computed only when
    ``result.pvalues`` is read.
    Raises ValueError naming the argument for a bad alpha, tau, sigma, n, correction, counts or
    labels (including a shape mismatch).
    """
    n = check_count_n(n)
    alpha = check_open_unit(alpha, "alpha")
    tau = check_open_unit(tau, "tau", low=0.5)
    sigma = check_positive(sigma, "sigma")
    correction = check_correction(correction)
    count_array, histogram = _image_histogram(counts, n)
    label_array = check_integer_array(labels, "labels")
    if label_array.shape != count_array.shape:
        raise ValueError(
            f"labels and counts must have the same shape, got {label_array.shape} and "
            f"{count_array.shape}"
        )
    low, high = int(label_array.min()), int(label_array.max())
    if low < 0 or high > _INT32_MAX:
        raise ValueError(
            f"labels must be class indices in [0, 2**31), got values in [{low}, {high}]"
        )

    m = count_array.size
    table = pvalue_table(n, tau)
    reject_k = reject_by_count(histogram, table, alpha, correction)
    counts_copy: np.ndarray = count_array.astype(np.uint8 if n <= 255 else np.int32)  # k <= n
    certified = counts_copy >= _smallest_rejected_count(reject_k, histogram)
    certified_labels = label_array.astype(np.int32)
    assert ABSTAIN == -1  # every bit set: OR-ing it in writes ABSTAIN, without a masked write
    abstain = certified.view(np.int8) - np.int8(1)  # 0 where certified, -1 elsewhere
    np.bitwise_or(certified_labels, abstain, out=certified_labels)
    min_count = min_count_to_certify(n, tau, alpha / m if correction == "bonferroni" else alpha)
    for array in (certified, certified_labels, counts_copy):
        array.setflags(write=False)
    return CertificationResult(
        labels=certified_labels,
        certified=certified,
        counts=counts_copy,
        radius=float(sigma * special.ndtri(tau)),
        alpha=alpha,
        tau=tau,
        sigma=sigma,
        n=n,
        correction=correction,
        min_count=min_count,
    )


def _image_histogram(counts: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts as an (H, W) integer array, its (n + 1,) histogram); ValueError naming counts unless
    2-d, non-empty and in [0, n]. The range is read off the histogram (np.bincount refuses
    negative values; a maximum above n lengthens it), so no extra passes over the pixels."""
    array = check_integer_array(counts, "counts")
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"counts must have shape (H, W) with H, W >= 1, got shape {array.shape}")
    flat = array.ravel()
    if not np.can_cast(array.dtype, np.intp):  # uint64: bincount would refuse the cast
        check_counts(array, n, "counts")
        flat = flat.astype(np.intp)
    try:
        histogram = np.bincount(flat, minlength=n + 1)
    except ValueError:
        check_counts(array, n, "counts")  # names the negative minimum
        raise
    if histogram.size > n + 1:
        raise ValueError(f"counts must be <= n = {n}, got a maximum of {histogram.size - 1}")
    return array, histogram


def _smallest_rejected_count(reject_k: np.ndarray, histogram: np.ndarray) -> int:
    """The count k* with: a pixel is rejected exactly when its count k >= k* (n + 1 if none is).

    reject_k, histogram: (n + 1,) from ``reject_by_count`` and ``np.bincount`` of the counts.
    Rejection is upward closed over the counts present, so one comparison per pixel replaces the
    lookup ``reject_k[k]``. Proof: the p-value P[Bin(n, tau) >= k] is non-increasing in k.
    Bonferroni rejects p <= alpha / m, a set closed upward. Holm rejects a prefix of the present
    counts sorted by p-value (stable, so equal p-values keep increasing k); for rejected k1 and a
    present k2 > k1, either p(k2) < p(k1) and k2 precedes k1 in that order, or p(k2) = p(k1): then
    every count from k1 to k2 in the order has that p-value and a later position, hence a larger
    threshold alpha / (m - j + 1), so each passes and the prefix reaches k2.
    """
    present = histogram > 0
    rejected = np.flatnonzero(reject_k & present)
    k_star = int(rejected[0]) if rejected.size else reject_k.size
    assert np.array_equal(reject_k[present], np.flatnonzero(present) >= k_star), "not upward closed"
    return k_star


def pixel_radii(counts: np.ndarray, n: int, *, alpha: float, sigma: float) -> np.ndarray:
    """Per-pixel certified L2 radii (Cohen's certificate made simultaneous over the m pixels).

    counts: (H, W) integer agreement counts k_i in [0, n] of the selected class ĉ_i; n >= 1;
    alpha in (0, 1) the family-wise level; sigma > 0 in [0, 1] units. m = H · W.
    Returns (H, W) float64 radius_i = sigma · Φ⁻¹(p_lower_i), where p_lower_i is the one-sided
    Clopper-Pearson lower bound of p_i at level alpha / m (Bonferroni), and 0 where
    p_lower_i <= 1/2 (the pixel abstains). With probability >= 1 - alpha, every pixel with a
    positive radius keeps g_i(x + delta) = ĉ_i for all ||delta||_2 < radius_i.
    Radii are finite: p_lower = 1 is impossible, since k = n gives
    p_lower = (alpha / m) ** (1 / n) < 1.
    """
    n = check_count_n(n)
    alpha = check_open_unit(alpha, "alpha")
    sigma = check_positive(sigma, "sigma")
    count_array = _check_image_counts(counts, n)
    p_lower = lower_bound_table(n, alpha / count_array.size)
    radius_per_count = np.where(p_lower > 0.5, sigma * special.ndtri(p_lower), 0.0)
    radii: np.ndarray = radius_per_count[count_array]
    return radii
