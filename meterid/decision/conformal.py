"""Guarantees a reviewer can lean on, set on held-out known photos (the validation split):

- auto-accept (Learn-then-Test, Angelopoulos et al. 2021): a photo the open-set rule keeps is
  accepted without review when its calibrated top-1 confidence is at least a threshold chosen so
  that the error rate among accepted photos is at most ``max_error`` with probability
  ``1 - delta``. Each threshold of a fixed grid is a binomial test of "error > max_error";
  Bonferroni over the grid keeps the family-wise error at ``delta``. When no threshold passes,
  nothing is auto-accepted and the report names the smallest bound the data can certify.
- prediction sets (split conformal): every label whose probability clears a quantile of the
  calibration photos' scores, and the top-1; they hold the true label with probability
  >= 1 - alpha, never empty.

Hand-written (a few lines of numpy/scipy): MAPIE and crepes wrap scikit-learn estimators,
while here the probabilities come from an ONNX or PyTorch engine at scoring time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta, binom

ACCEPT_GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
NEVER = math.inf


def error_upper_bound(errors: int, n: int, confidence: float) -> float:
    """Clopper-Pearson upper bound of an error rate observed as ``errors`` in ``n``."""
    return 1.0 if n == 0 or errors >= n else float(beta.ppf(confidence, errors + 1, n - errors))


@dataclass(frozen=True)
class AcceptRule:
    """Auto-accept a kept photo whose top-1 confidence is >= ``threshold`` (inf: never)."""

    threshold: float
    max_error: float
    delta: float
    certified: bool
    best_bound: float           # smallest error bound certifiable at 1 - delta on this data
    best_bound_threshold: float
    calibration_photos: int

    def accepts(self, confidence: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        return ~unknown & (confidence >= self.threshold)

    def to_dict(self) -> dict:
        return asdict(self)


def certify_accept_threshold(confidence: np.ndarray, correct: np.ndarray, kept: np.ndarray,
                             max_error: float, delta: float,
                             grid: tuple[float, ...] = ACCEPT_GRID) -> AcceptRule:
    """The lowest grid threshold (most photos accepted) whose selective error is certified
    under ``max_error``. ``kept``: photos the open-set rule did not flag UNKNOWN."""
    level = delta / len(grid)  # Bonferroni: every grid point is tested
    passed, bounds = [], []
    for threshold in grid:
        accepted = kept & (confidence >= threshold)
        n, errors = int(accepted.sum()), int((accepted & ~correct).sum())
        if n and binom.cdf(errors, n, max_error) <= level:
            passed.append(threshold)
        bounds.append((error_upper_bound(errors, n, 1 - level), threshold))
    best_bound, best_threshold = min(bounds)
    return AcceptRule(min(passed) if passed else NEVER, max_error, delta, bool(passed),
                      best_bound, best_threshold, len(confidence))


@dataclass(frozen=True)
class PredictionSetRule:
    """The labels with probability >= 1 - ``quantile``, and always the top-1 (adding it can only
    raise coverage): hold the truth with probability >= 1 - ``alpha``. ``alpha`` is the one the
    calibration photos certify: ``requested_alpha`` when there are enough of them, else the
    smallest they can (``reason`` says so)."""

    alpha: float
    quantile: float
    calibration_photos: int
    requested_alpha: float | None = None  # None: policies stored before it was recorded
    reason: str = ""

    def sets(self, probabilities: np.ndarray) -> list[np.ndarray]:
        order = np.argsort(-probabilities, axis=1, kind="stable")
        ranked = np.take_along_axis(probabilities, order, axis=1)
        sizes = np.maximum(1, (ranked >= 1 - self.quantile).sum(axis=1))
        return [row[:size] for row, size in zip(order, sizes, strict=True)]

    def to_dict(self) -> dict:
        return asdict(self)


def certifiable_alpha(n: int) -> float:
    """The smallest miscoverage split conformal certifies with ``n`` calibration photos: the
    (n + 1)(1 - alpha)-th smallest score must exist, so alpha >= 1 / (n + 1)."""
    return 1 / (n + 1)


def fit_prediction_sets(probabilities: np.ndarray, targets: np.ndarray,
                        alpha: float) -> PredictionSetRule:
    """Split conformal with the score 1 - p(true label) (least ambiguous sets, Sadinle et al.
    2019; smaller than adaptive sets for a confident model: on the demo 1.0 labels vs 17): the
    ceil((n + 1)(1 - alpha)) / n quantile. With too few photos for ``alpha`` (fewer than
    1 / alpha - 1), the smallest alpha they certify: on the grocery collection's 84 validation
    photos, alpha 0.01 made every set hold all 27 classes."""
    n = len(targets)
    if not n:
        return PredictionSetRule(alpha, math.inf, 0, alpha,
                                 "no calibration photos: every label")
    used, reason = alpha, ""
    if alpha < certifiable_alpha(n):
        used = certifiable_alpha(n)
        reason = (f"{n} calibration photos certify alpha >= {used:.4f}, not {alpha:g} (that "
                  f"needs {math.ceil(1 / alpha) - 1}): the sets hold the truth with p >= "
                  f"{1 - used:.4f}")
    rank = min(n, math.ceil((n + 1) * (1 - used) - 1e-9))
    scores = np.sort(1 - probabilities[np.arange(n), targets])
    # the rank-th smallest itself: np.quantile(rank / n, method="higher") took the next one, so
    # at rank n - 1 the single worst photo set every set (9.5 of 12 labels on a real cut)
    return PredictionSetRule(used, float(scores[rank - 1]), n, alpha, reason)


def set_coverage(sets: list[np.ndarray], targets: np.ndarray) -> tuple[float, float]:
    """(share of sets holding the true label, mean set size)."""
    if not sets:
        return float("nan"), float("nan")
    hits = [int(t) in s for s, t in zip(sets, targets, strict=True)]
    return float(np.mean(hits)), float(np.mean([len(s) for s in sets]))
