"""The quality gate's limits derived from the training photos: the rule on synthetic measures,
the fallback for models without them, and the scorer using a model's own limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meterid.config import Params
from meterid.core import POOR_QUALITY
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.inference.quality import (
    DERIVED,
    GENERIC,
    Quality,
    QualityLimits,
    derive_limits,
    gate_limits,
    measure_quality,
    quality_issues,
)
from meterid.photos.images import load_rgb
from meterid.scoring.pipeline import BatchScorer
from tests.scoring.conftest import meter_like

GROCERY = Path(__file__).resolve().parents[3] / "shared" / "data" / "grocery" / "raw"
LIMITS = ("min_brightness", "max_brightness", "min_contrast", "min_sharpness", "max_glare")


def collection(n: int, seed: int = 0, **ranges: tuple[float, float]) -> list[Quality]:
    """``n`` photos' measures, each uniform in its range (defaults: ordinary shop photos)."""
    rng = np.random.default_rng(seed)
    spans = {"brightness": (0.3, 0.6), "contrast": (0.1, 0.3), "sharpness": (30.0, 1300.0),
             "glare": (0.0, 0.08), **ranges}
    values = {name: rng.uniform(*span, n) for name, span in spans.items()}
    return [Quality(**{name: float(v[i]) for name, v in values.items()}) for i in range(n)]


def stopped(measures: list[Quality], limits) -> float:
    return float(np.mean([bool(quality_issues(q, limits)) for q in measures]))


def white_background_photo(path: Path) -> Path:
    """A product on a white background (70% of the frame): glare ~0.69, brightness ~0.85."""
    canvas = Image.new("RGB", (320, 400), (255, 255, 255))
    canvas.paste(meter_like(175, 219), (72, 90))
    canvas.save(path, "JPEG", quality=90)
    return path


def test_a_white_background_collection_raises_the_glare_limit_so_its_photos_pass(params):
    generic = params.score.quality
    photos = collection(500, glare=(0.55, 0.83), brightness=(0.70, 0.93))
    limits = derive_limits(photos, generic)
    assert limits.source == DERIVED and limits.photos == 500
    assert 0.83 < limits.max_glare <= generic.outer.max_glare
    assert 0.93 < limits.max_brightness <= generic.outer.max_brightness
    # where the collection stays inside the generic limits, they hold
    assert (limits.min_brightness, limits.min_contrast, limits.min_sharpness) == (
        generic.min_brightness, generic.min_contrast, generic.min_sharpness)
    assert limits.stopped_share == stopped(photos, limits) <= 0.01
    assert limits.generic_stopped["max_glare"] == 1.0 == limits.generic_stopped["any"]
    assert stopped(photos, generic) == 1.0


def test_a_collection_inside_the_generic_limits_keeps_them(params):
    generic = params.score.quality
    limits = derive_limits(collection(300), generic)
    assert {k: getattr(limits, k) for k in LIMITS} == {k: getattr(generic, k) for k in LIMITS}
    assert limits.stopped_share == 0.0 and limits.generic_stopped["any"] == 0.0


@pytest.mark.parametrize("n", [20, 200, 3000])
def test_at_most_one_percent_of_the_training_photos_is_stopped(params, n: int):
    """Heavy tails on every side, past the generic limits but inside the outer bounds."""
    for seed in range(5):
        photos = collection(n, seed, brightness=(0.031, 0.969), contrast=(0.021, 0.5),
                            sharpness=(5.1, 2000.0), glare=(0.0, 0.949))
        limits = derive_limits(photos, params.score.quality)
        assert limits.stopped_share == stopped(photos, limits) <= 0.01, (n, seed, limits)


def test_the_outer_bounds_hold_for_black_blank_and_blurred_frames(params, tmp_path: Path):
    """A collection reaching past them (3% black or white, blank, blurred frames) does not move
    them, and a black and a blank frame, measured as scoring measures them, are stopped."""
    outer = params.score.quality.outer
    flat = dict(contrast=(0.0, 0.005), sharpness=(0.0, 1.0))
    frames = (collection(15, brightness=(0.0, 0.01), glare=(0.0, 0.0), **flat)
              + collection(15, brightness=(0.99, 1.0), glare=(0.99, 1.0), **flat))
    limits = derive_limits(collection(970) + frames, params.score.quality)
    assert {k: getattr(limits, k) for k in LIMITS} == {k: getattr(outer, k) for k in LIMITS}
    assert limits.stopped_share == pytest.approx(0.03)  # the frames: reported, not let through
    for name, colour in (("black", (0, 0, 0)), ("blank", (128, 128, 128))):
        Image.new("RGB", (480, 640), colour).save(tmp_path / f"{name}.jpg", quality=90)
        frame = measure_quality(load_rgb(tmp_path / f"{name}.jpg", 50_000_000, 224))
        assert quality_issues(frame, limits), name


def test_an_empty_collection_is_refused(params):
    with pytest.raises(ValueError, match="no training photos"):
        derive_limits([], params.score.quality)


def test_limits_round_trip_as_plain_values_and_old_models_use_the_generic_ones(params):
    limits = derive_limits(collection(100, glare=(0.5, 0.8)), params.score.quality)
    plain = json.loads(json.dumps(limits.to_dict()))
    assert QualityLimits.from_dict(plain) == limits
    assert gate_limits(limits, params.score.quality) == limits
    fallback = gate_limits(None, params.score.quality)  # a model trained before derived limits
    assert fallback.source == GENERIC and fallback.photos == 0
    assert {k: getattr(fallback, k) for k in LIMITS} == {
        k: getattr(params.score.quality, k) for k in LIMITS}
    assert "generic" in fallback.describe() and "100 training photos" in limits.describe()


def test_a_generic_limit_turned_off_stays_off(params):
    """Tests of soft generated photos set min_sharpness and min_contrast to 0: no bound may
    switch the check back on, and the params must still parse."""
    off = params.score.quality.model_copy(update=dict(min_sharpness=0.0, min_contrast=0.0))
    limits = derive_limits(collection(50, sharpness=(0.5, 5.0), contrast=(0.001, 0.05)), off)
    assert limits.min_sharpness == 0.0 and limits.min_contrast == 0.0
    assert stopped(collection(50, sharpness=(0.5, 5.0), contrast=(0.001, 0.05)), limits) == 0


def _scorer(loaded, params: Params) -> BatchScorer:
    return BatchScorer(Predictor(loaded), Fetcher(params.score.fetch, pool_size=1),
                       params.score.quality, params.validate_.max_pixels, 4, 1)


def test_a_model_with_derived_limits_passes_a_white_background_photo(
        tiny_model, params, tmp_path: Path, one_thread):
    photo = str(white_background_photo(tmp_path / "carton.jpg"))
    old = _scorer(tiny_model, params).score_in_order([photo])[0]
    assert old.label == POOR_QUALITY and "glare" in old.quality_issue

    derived = derive_limits(collection(200, glare=(0.55, 0.83), brightness=(0.7, 0.92)),
                            params.score.quality)
    scorer = _scorer(tiny_model.with_card(quality_limits=derived), params)
    assert scorer.quality == derived
    row = scorer.score_in_order([photo])[0]
    assert row.status == "ok" and row.quality_issue is None, row.quality_issue
    assert row.label != POOR_QUALITY and row.glare > params.score.quality.max_glare


def test_a_scoring_run_records_the_limits_it_used(tiny_model, params, tmp_path: Path,
                                                  one_thread):
    from meterid.scoring.steps import score_list

    derived = derive_limits(collection(50, glare=(0.55, 0.83)), params.score.quality)
    predictor = Predictor(tiny_model.with_card(quality_limits=derived))
    run_params = params.model_copy(update={"paths": params.paths.model_copy(update=dict(
        scoring_reports=tmp_path / "scoring", unknown_store=tmp_path / "store",
        review_db=tmp_path / "review.db"))})
    (tmp_path / "list.txt").write_text(str(white_background_photo(tmp_path / "a.jpg")) + "\n")
    outcome = score_list(run_params, params.score, predictor, tmp_path / "list.txt")
    assert QualityLimits.from_dict(outcome.summary["quality_limits"]) == derived
    assert outcome.summary["poor_quality"] == 0


@pytest.mark.skipif(not GROCERY.is_dir(), reason="needs ../shared/data/grocery (real photos)")
def test_real_shop_photos_pass_the_gate_derived_from_their_training_photos(params):
    """The upstream training photos of the grocery set (761 shop photos, 348 px) give the
    limits; at most 1% of all 1,545 photos is stopped by them."""
    measure = lambda p: measure_quality(  # noqa: E731 - scoring's decode
        load_rgb(p, params.validate_.max_pixels, params.train.photo_size))
    train = [measure(p) for p in sorted(GROCERY.rglob("train_*.jpg"))]
    limits = derive_limits(train, params.score.quality)
    assert limits.photos == 761 and limits.stopped_share <= 0.01
    rest = [measure(p) for p in sorted(GROCERY.rglob("*.jpg")) if not p.name.startswith("train_")]
    assert stopped(rest, limits) <= 0.01

