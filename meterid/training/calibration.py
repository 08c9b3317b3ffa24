"""Temperature scaling, kept only when it lowers a cross-validated NLL, and expected
calibration error."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import brentq
from sklearn.model_selection import KFold
from torch.nn import functional as F

from meterid.decision.conformal import error_upper_bound

MIN_ERRORS_TO_SHARPEN = 5  # validation errors an NLL-fitted temperature below 1 needs
CERTIFIED_ACCURACY_LEVEL = 0.95  # below that: sharpen to the accuracy certified at this level
MIN_CALIBRATION_PHOTOS = 30  # fewer: no temperature from them (out-of-fold photos instead)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature minimising validation NLL (optimised in log space so it stays positive)."""
    if len(targets) == 0:
        return 1.0
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


ECE_BINS = 15


def expected_calibration_error(
    probabilities: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    if len(targets) == 0:
        return float("nan")
    correct = probabilities.argmax(axis=1) == targets
    return float(_binned_gap(probabilities.max(axis=1), correct[None, :], bins)[0])


def _binned_gap(confidence: np.ndarray, correct: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of ``correct`` (draws x photos) against the photos' ``confidence``."""
    edges = np.linspace(0, 1, bins + 1)
    member = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1) == np.arange(bins)[:, None]
    member = member.astype(float)
    counts = member.sum(axis=1)
    used = counts > 0
    accuracy = correct.astype(float) @ member[used].T / counts[used]  # draws x used bins
    mean_confidence = member[used] @ confidence / counts[used]
    return np.abs(accuracy - mean_confidence) @ (counts[used] / len(confidence))


@dataclass(frozen=True)
class EceNoise:
    """The ECE a perfectly calibrated model reads on photos with these confidences: binned ECE
    of a few photos is biased upwards (each bin's accuracy is a small sample), so a measured
    ECE means miscalibration only when it is above ``p95``. Grocery, 288 px: 2.2-2.6% expected
    on its 700 test photos, 4.9-5.9% on 120 of them, 6.8-8.4% on 49 (docs/real-photos.md)."""

    expected: float  # mean over draws
    p95: float       # 95th percentile: above it, miscalibration at the 5% level


def ece_noise(confidence: np.ndarray, bins: int = ECE_BINS, draws: int = 2000,
              seed: int = 0) -> EceNoise:
    """Consistency resampling (Broecker and Smith 2007): each photo is right with probability
    its own confidence, as it would be for a calibrated model, and the ECE of each draw kept."""
    if len(confidence) == 0:
        return EceNoise(float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // len(confidence))  # draws at a time: memory stays ~16 MB
    gaps = np.concatenate([
        _binned_gap(confidence, rng.random((min(block, draws - done), len(confidence)))
                    < confidence, bins)
        for done in range(0, draws, block)])
    return EceNoise(float(gaps.mean()), float(np.quantile(gaps, 0.95)))


@dataclass(frozen=True)
class Calibration:
    """The temperature a model ships with, and why: ``method`` is "temperature" (fitted on
    ``fitted_on``'s logits) or "none" (T = 1, with the reason)."""

    temperature: float
    method: str
    reason: str
    cv_nll_uncalibrated: float  # cross-validated on the validation logits; NaN when not run
    cv_nll_calibrated: float
    fitted_on: str = "validation"  # or "out-of-fold" (training photos, cross-fitted models)

    def to_dict(self) -> dict:
        return asdict(self)


def _cross_validated_nll(logits: torch.Tensor, targets: torch.Tensor, folds: int,
                         seed: int) -> tuple[float, float]:
    """Mean NLL of each held-out fold with T = 1 and with T fitted on the other folds: what
    fitting does to images it did not see. NLL, not ECE: binned ECE on folds of a few images
    is mostly noise. On 40 draws of 40 images of a calibrated model, fitting always raised the
    held-out ECE in 33, an ECE check in 20, this NLL check in 11 (T = 1 kept in 29)."""
    identity, fitted = 0.0, 0.0
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(targets):
        temperature = fit_temperature(logits[fit_rows], targets[fit_rows])
        held_logits, held_targets = logits[held_rows], targets[held_rows]
        identity += F.cross_entropy(held_logits, held_targets, reduction="sum").item()
        fitted += F.cross_entropy(held_logits / temperature, held_targets,
                                  reduction="sum").item()
    return identity / len(targets), fitted / len(targets)


def calibrate(logits: torch.Tensor, targets: torch.Tensor, folds: int = 5,
              min_images: int = MIN_CALIBRATION_PHOTOS, seed: int = 0,
              fitted_on: str = "validation") -> Calibration:
    """A temperature only when it earns its place: on too few validation images, or when a
    temperature fitted on part of them raises the NLL of the rest (cross-validated), the model
    keeps T = 1. A temperature fitted on 18 photos of 3 classes (0.14) once raised held-out ECE
    from 6.4% to 10%: a calibration that makes things worse must not ship."""
    n, classes = len(targets), int(torch.unique(targets).numel()) if len(targets) else 0
    if n < min_images or classes < 2:
        return Calibration(1.0, "none", f"{n} {fitted_on} images of {classes} classes: fewer "
                           f"than {min_images} (or one class) cannot fit a temperature that "
                           "holds", float("nan"), float("nan"), fitted_on)
    before, after = _cross_validated_nll(logits, targets, min(folds, n), seed)
    if after >= before:
        return Calibration(1.0, "none", f"a fitted temperature did not lower the "
                           f"cross-validated NLL of {n} {fitted_on} images ({before:.4f} -> "
                           f"{after:.4f})", before, after, fitted_on)
    temperature = fit_temperature(logits, targets)
    errors = int((logits.argmax(dim=1) != targets).sum())
    if temperature < 1 and errors < MIN_ERRORS_TO_SHARPEN:
        temperature, method, reason = certified_sharpening(logits, temperature, errors,
                                                           fitted_on)
        return Calibration(temperature, method, reason, before, after, fitted_on)
    return Calibration(temperature, "temperature", f"cross-validated NLL {before:.4f} -> "
                       f"{after:.4f} on {n} {fitted_on} images", before, after, fitted_on)


def certified_sharpening(logits: torch.Tensor, temperature: float, errors: int,
                         fitted_on: str = "validation") -> tuple[float, str, str]:
    """With (almost) no validation errors NLL falls towards 0 as T -> 0: any sharpening "wins"
    the check, and every confidence would read 1.0 (the demo once got T = 0.054). But a model
    trained on smoothed targets is underconfident by design at T = 1 (the demo: 66% mean
    confidence at 100% right). So the NLL's ``temperature`` is kept only as far as the
    accuracy the photos certify: the mean confidence stops there. Returns the temperature,
    the method and the reason, as ``Calibration`` keeps them."""
    n = len(logits)
    accuracy = 1 - error_upper_bound(errors, n, CERTIFIED_ACCURACY_LEVEL)
    floor = temperature_at_confidence(logits, accuracy)
    what = (f"{errors} {fitted_on} error(s) among {n} certify {accuracy:.1%} accuracy "
            f"(one-sided {CERTIFIED_ACCURACY_LEVEL:.0%}); the NLL's temperature "
            f"({temperature:.3g}) cannot be measured on fewer than {MIN_ERRORS_TO_SHARPEN}")
    if floor >= 1:
        return 1.0, "none", f"{what}, and T = 1 is already that sure"
    if temperature >= floor:
        return temperature, "temperature", f"{what}, but it stops short of that accuracy"
    return floor, "temperature", f"{what}: sharpened only to a mean confidence of {accuracy:.1%}"


def temperature_at_confidence(logits: torch.Tensor, confidence: float) -> float:
    """The temperature in [0.05, 1] at which the mean top-1 probability of ``logits`` is
    ``confidence`` (it falls as the temperature rises); 1.0 when T = 1 is already that sure,
    0.05 when even that is not."""
    def excess(temperature: float) -> float:
        return float(F.softmax(logits / temperature, dim=1).amax(dim=1).mean()) - confidence

    if excess(1.0) >= 0:
        return 1.0
    if excess(0.05) <= 0:
        return 0.05
    return float(brentq(excess, 0.05, 1.0, xtol=1e-4))
