"""Certification statistics (pure numpy/scipy): votes → counts → certified labels, radii, metrics.

No torch, no files, no randomness. The method, units and conventions: docs/method.md §3-4.
"""

from __future__ import annotations

from certseg.stats.bounds import (
    binomial_pvalues,
    clopper_pearson_lower,
    lower_bound_table,
    min_count_to_certify,
    pvalue_table,
)
from certseg.stats.certify import CertificationResult, certify_pixels, pixel_radii
from certseg.stats.constants import ABSTAIN
from certseg.stats.correction import (
    CORRECTIONS,
    Correction,
    bonferroni_reject,
    holm_reject,
    reject_by_count,
)
from certseg.stats.image_counts import ImageCounts, count_image_votes
from certseg.stats.metrics import ConfusionAccumulator, SegmentationMetrics, segmentation_metrics
from certseg.stats.sequential import (
    LookSchedule,
    SequentialResult,
    certify_at_look,
    counts_at_looks,
    run_sequential,
)
from certseg.stats.votes import (
    EstimationCounts,
    count_agreement,
    count_estimation,
    count_votes,
    labels_from_votes,
    select_labels,
)

__all__ = [
    "ABSTAIN",
    "CORRECTIONS",
    "CertificationResult",
    "ConfusionAccumulator",
    "Correction",
    "EstimationCounts",
    "ImageCounts",
    "LookSchedule",
    "SegmentationMetrics",
    "SequentialResult",
    "binomial_pvalues",
    "bonferroni_reject",
    "certify_at_look",
    "certify_pixels",
    "clopper_pearson_lower",
    "count_agreement",
    "count_estimation",
    "count_image_votes",
    "count_votes",
    "counts_at_looks",
    "holm_reject",
    "labels_from_votes",
    "lower_bound_table",
    "min_count_to_certify",
    "pixel_radii",
    "pvalue_table",
    "reject_by_count",
    "run_sequential",
    "segmentation_metrics",
    "select_labels",
]
