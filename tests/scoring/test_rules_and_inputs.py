"""Pure logic of scoring: the UNKNOWN rule, reading lists, summaries and drift alerts."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from meterid.decision.conformal import AcceptRule, PredictionSetRule
from meterid.decision.openset import ModelOutputs, OpenSetRule, Reference
from meterid.decision.policy import DecisionPolicy
from meterid.inference.predictor import Predictor
from meterid.inference.quality import Quality, quality_issues
from meterid.scoring.monitoring import drift_alerts, summarize
from meterid.scoring.sources import InputError, read_sources

RESERVED = frozenset({"row", "url", "label", "status"})


def _outputs(probabilities: np.ndarray, embeddings: np.ndarray) -> ModelOutputs:
    return ModelOutputs(np.log(probabilities), probabilities, embeddings)


def test_unknown_below_threshold_keeps_the_top3(tiny_model):
    predictor = Predictor(tiny_model)
    probabilities = np.array([[0.45, 0.35, 0.20], [0.10, 0.85, 0.05], [0.50, 0.30, 0.20]])
    embeddings = np.zeros((3, tiny_model.model.embedding_dim), dtype=np.float32)
    unsure, sure, edge = predictor.predictions(_outputs(probabilities, embeddings))
    assert unsure.label == "UNKNOWN" and unsure.is_unknown
    assert unsure.top_labels == ("alpha", "beta", "gamma")
    assert unsure.top_confidences == (0.45, 0.35, 0.2)
    assert sure.label == "beta" and not sure.is_unknown
    assert edge.label == "alpha"  # at the threshold is not under it
    columns = unsure.columns()
    assert columns["top1_label"] == "alpha" and columns["top3_conf"] == 0.2
    # an untested model auto-accepts nothing and offers every label to the reviewer
    assert not any(p.auto_accepted for p in (unsure, sure, edge))
    assert columns["prediction_set"] == ["alpha", "beta", "gamma"]
    assert columns["open_set_score"] == 0.45


def test_with_threshold_shares_the_engine_and_leaves_the_original_alone(tiny_model):
    outputs = _outputs(np.array([[0.7, 0.2, 0.1]]),
                       np.zeros((1, tiny_model.model.embedding_dim), dtype=np.float32))
    default = Predictor(tiny_model)
    stricter = default.with_threshold(0.8)
    assert stricter.predictions(outputs)[0].label == "UNKNOWN"
    assert default.predictions(outputs)[0].label == "alpha"
    assert stricter.engine is default.engine


def _policy(open_set: OpenSetRule, accept_threshold: float, quantile: float) -> DecisionPolicy:
    return DecisionPolicy(open_set, AcceptRule(accept_threshold, 0.02, 0.1, True, 0.02,
                                               accept_threshold, 100),
                          PredictionSetRule(0.05, quantile, 100))


def _knn_predictor(tiny_model) -> tuple[Predictor, np.ndarray]:
    """kNN (k = 1) at similarity -0.5, auto-accept from 0.9, sets at p >= 0.25, over 4
    reference embeddings (unit vectors e0, e1, e2, e0); returns the predictor and them."""
    reference = np.eye(tiny_model.model.embedding_dim, dtype=np.float32)[:4]
    policy = _policy(OpenSetRule("knn", -0.5, 1), accept_threshold=0.9, quantile=0.75)
    predictor = Predictor(tiny_model.with_card(policy=policy))
    predictor.reference = Reference(reference, np.array([0, 1, 2, 0]))
    return predictor, reference


def test_knn_rule_accept_rule_and_sets_from_the_stored_policy(tiny_model):
    predictor, reference = _knn_predictor(tiny_model)
    near, far = reference[0], -reference[0]  # nearest similarity 1 and 0 (orthogonal to e1..e3)
    probabilities = np.array([[0.95, 0.03, 0.02], [0.6, 0.3, 0.1], [0.95, 0.03, 0.02]])
    sure, unsure, stranger = predictor.predictions(
        _outputs(probabilities, np.stack([near, near, far])))
    assert (sure.label, sure.auto_accepted, sure.prediction_set) == ("alpha", True, ("alpha",))
    # kept but under the accept threshold: a reviewer picks from the labels with p >= 0.25
    assert (unsure.label, unsure.auto_accepted) == ("alpha", False)
    assert unsure.prediction_set == ("alpha", "beta")
    # confident, but far from every training image: UNKNOWN, never auto-accepted
    assert (stranger.label, stranger.auto_accepted) == ("UNKNOWN", False)
    assert stranger.open_set_score == pytest.approx(-1.0)
    # --threshold replaces the evaluated rule by the design's fixed confidence
    assert predictor.with_threshold(0.5).predictions(
        _outputs(probabilities[2:], far[None]))[0].label == "alpha"


def test_quality_reasons_name_value_and_limit(params):
    limits = params.score.quality
    fine = Quality(brightness=0.5, contrast=0.2, sharpness=100.0, glare=0.0)
    assert quality_issues(fine, limits) == []
    bad = Quality(brightness=0.02, contrast=0.01, sharpness=0.5, glare=0.9)
    reasons = quality_issues(bad, limits)
    assert any(r.startswith("too dark (brightness 0.02 <") for r in reasons)
    assert any(r.startswith("blurred") for r in reasons) and any("glare" in r for r in reasons)


def test_csv_excel_and_text_lists(tmp_path: Path):
    frame = pd.DataFrame({"site": ["a", "b", "c"], "URL": ["http://x/1.jpg", None, " /p.jpg "],
                          "label": ["x", "y", "z"]})
    frame.to_csv(tmp_path / "list.csv", index=False)
    frame.to_excel(tmp_path / "list.xlsx", index=False)
    (tmp_path / "list.txt").write_text("# comment\nhttp://x/1.jpg\n\n/p.jpg\n")
    for name in ("list.csv", "list.xlsx"):
        sources = read_sources(tmp_path / name, None, RESERVED)
        assert list(sources["url"]) == ["http://x/1.jpg", "", "/p.jpg"]  # empty kept, stripped
        assert list(sources["row"]) == [0, 1, 2]
        assert list(sources["site"]) == ["a", "b", "c"]
        assert list(sources["input_label"]) == ["x", "y", "z"]  # renamed, not overwritten
    assert list(read_sources(tmp_path / "list.csv", "1", RESERVED)["url"])[0] == "http://x/1.jpg"
    assert list(read_sources(tmp_path / "list.txt", None, RESERVED)["url"]) == [
        "http://x/1.jpg", "/p.jpg"]


def test_bad_lists_are_named_errors(tmp_path: Path):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(InputError, match="no 'url' column.*'a', 'b'"):
        read_sources(tmp_path / "two.csv", None, RESERVED)
    with pytest.raises(InputError, match="no column 'photo'"):
        read_sources(tmp_path / "two.csv", "photo", RESERVED)
    with pytest.raises(InputError, match="no such input file"):
        read_sources(tmp_path / "absent.csv", None, RESERVED)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(InputError, match="unsupported list format '.json'"):
        read_sources(tmp_path / "list.json", None, RESERVED)
    (tmp_path / "broken.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(InputError, match="broken.xlsx: cannot read the list"):
        read_sources(tmp_path / "broken.xlsx", None, RESERVED)


def _scored(labels: list[str | None], confidences: list[float | None]) -> pd.DataFrame:
    return pd.DataFrame({
        "status": ["ok" if label else "error" for label in labels],
        "label": labels, "top1_conf": confidences,
        "error": [None if label else "HTTP 404 Not Found" for label in labels]})


def test_summary_counts_and_shares():
    summary = summarize(_scored(["a", "UNKNOWN", "POOR_QUALITY", "a", None],
                                [0.9, 0.3, 0.6, 0.8, None]))
    assert (summary["rows"], summary["ok"], summary["errors"]) == (5, 4, 1)
    assert summary["unknown_share"] == 0.25 and summary["poor_quality_share"] == 0.25
    assert math.isclose(summary["mean_top1_conf"], 0.65)
    assert summary["label_counts"] == {"a": 2, "UNKNOWN": 1, "POOR_QUALITY": 1}
    assert summary["error_reasons"] == {"HTTP 404 Not Found": 1}


def test_drift_alert_needs_history_and_fires_beyond_bounds(params):
    cfg = params.score.monitor
    steady = [{"unknown_share": 0.05, "mean_top1_conf": 0.9}] * cfg.min_trailing_runs
    assert drift_alerts({"unknown_share": 0.30, "mean_top1_conf": 0.9}, steady[:1], cfg) == []
    assert drift_alerts({"unknown_share": 0.08, "mean_top1_conf": 0.88}, steady, cfg) == []
    alerts = drift_alerts({"unknown_share": 0.30, "mean_top1_conf": 0.70}, steady, cfg)
    assert len(alerts) == 2 and alerts[0].startswith("UNKNOWN share 30.0% vs 5.0%")


def test_scoring_preprocessing_equals_torchvisions_eval_transforms(tiny_model):
    """Per-image resize + per-batch normalisation == torchvision's ToDtype + Normalize."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from tests.scoring.conftest import meter_like

    pre = tiny_model.preprocessing
    reference = v2.Compose([v2.Resize((pre.image_size, pre.image_size), antialias=True),
                            v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                            v2.Normalize(pre.mean, pre.std)])
    predictor = Predictor(tiny_model)
    images = [meter_like(seed=s) for s in range(3)] + [Image.new("RGB", (300, 120), "red")]
    batch = predictor.normalize(torch.stack([predictor.preprocess(im) for im in images]))
    expected = torch.stack([reference(im) for im in images])
    assert predictor.preprocess(images[0]).dtype == torch.uint8
    torch.testing.assert_close(batch, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(480, 640), (1000, 1333)])
def test_the_quality_gate_measures_the_models_decode_the_same_at_any_camera_size(params, size):
    """Sharpness is measured on the scaled decode at 320 px: a demo photo passes at either
    camera size, and the same photo blurred past reading is stopped at either size."""
    import io

    from PIL import ImageFilter

    from meterid.data.demo.catalog import build_catalog
    from meterid.data.demo.photo import compose_photo
    from meterid.data.demo.render import render_meter
    from meterid.inference.quality import MEASURE_SIDE, measure_quality
    from meterid.photos.images import rgb_from_bytes

    def gate(image) -> list[str]:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        decoded = rgb_from_bytes(buffer.getvalue(), 10**8, params.train.photo_size)
        # scaled down as far as the model's input allows (480x640 is not, at 352 px)
        assert min(decoded.size) >= params.train.photo_size and max(decoded.size) <= max(size)
        return quality_issues(measure_quality(decoded), params.score.quality)

    spec = build_catalog(4, 0)[0][1]
    rng = np.random.default_rng(3)
    photo = compose_photo(render_meter(spec, rng), rng, params.demo.nuisance, size)
    assert MEASURE_SIDE == 320 and gate(photo) == []
    blurred = photo.filter(ImageFilter.GaussianBlur(8 * max(size) / 640))
    assert [reason.split(" (")[0] for reason in gate(blurred)] == ["blurred"]


def test_checkpoint_parts_must_cover_every_row_once(tmp_path: Path):
    from meterid.scoring.checkpoint import Checkpoint

    checkpoint = Checkpoint(tmp_path / "work")
    meta = checkpoint.run_meta({"output": "out.parquet"})
    assert checkpoint.run_meta({"output": "other"}) == meta  # fixed by the first start
    checkpoint.write([{"row": 0, "status": "ok"}, {"row": 2, "status": "ok"}])
    assert checkpoint.done_rows() == {0, 2}
    with pytest.raises(RuntimeError, match=r"missing \[1\]"):
        checkpoint.assemble(3)
    checkpoint.write([{"row": 1, "status": "error"}, {"row": 2, "status": "ok"}])
    with pytest.raises(RuntimeError, match=r"duplicated \[2\]"):
        checkpoint.assemble(3)


def test_demo_list_covers_test_photos_held_out_brands_and_broken_links(tmp_path: Path):
    import requests

    from meterid.scoring.demo import demo_scoring_list, demo_test_photos, serve_folder

    for folder, name in (("raw/a", "a_0.jpg"), ("raw/a", "a_1.jpg"), ("unknown/x", "x 0.jpg")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_bytes(b"\xff\xd8\xff" + name.encode())
    pd.DataFrame({"path": ["a/a_0.jpg", "a/a_1.jpg"], "label": ["a", "a"],
                  "split": ["train", "test"]}).to_csv(tmp_path / "splits.csv", index=False)
    photos = demo_test_photos(tmp_path / "splits.csv", tmp_path / "raw")
    with serve_folder(tmp_path) as base:
        rows = demo_scoring_list(base, tmp_path, photos, tmp_path / "unknown")
        assert list(rows["truth"][:2]) == ["a", "held-out:x"]
        assert requests.get(rows["url"][1], timeout=5).content == b"\xff\xd8\xffx 0.jpg"
    assert base.startswith("http://127.0.0.1:") and len(rows) == 5
    assert set(rows["truth"][2:]) == {"broken link", "an HTML page", "unsupported scheme"}


def test_a_grayscale_photo_without_a_bound_of_its_own_goes_to_review_and_says_so(tiny_model):
    predictor, reference = _knn_predictor(tiny_model)
    probabilities = np.array([[0.95, 0.03, 0.02]] * 2)
    outputs = ModelOutputs(np.log(probabilities), probabilities,
                           np.stack([reference[0]] * 2), grayscale=np.array([False, True]))
    colour, gray = predictor.predictions(outputs)
    assert (colour.label, colour.auto_accepted, colour.grayscale) == ("alpha", True, False)
    # the same sure, known-looking photo without colour: labelled, but for a reviewer
    assert (gray.label, gray.auto_accepted, gray.grayscale) == ("alpha", False, True)
    assert gray.columns()["grayscale"] is True


def test_the_predictor_tells_grayscale_photos_from_the_pixels_it_scores(tiny_model):
    from meterid.photos.field import to_grayscale

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    night = to_grayscale(photo)
    buffer = io.BytesIO()
    night.save(buffer, format="JPEG", quality=90)  # as a night-mode camera stores it
    stored = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    predictor = Predictor(tiny_model)
    batch = torch.stack([predictor.preprocess(image) for image in (photo, night, stored)])
    assert [p.grayscale for p in predictor.predict(batch)] == [False, True, True]


def test_a_grayscale_head_labels_the_photos_without_colour_and_only_them(tiny_model):
    """The second head reads the photos without colour from the same embeddings; the colour
    photo's prediction is the one the model gives without it."""
    from meterid.photos.field import to_grayscale

    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    with_head = dataclasses.replace(tiny_model, model=copy.deepcopy(tiny_model.model))
    head = with_head.model.with_grayscale_head()
    with torch.no_grad():  # a head that sees "gamma" in everything
        head[1].weight.zero_()
        head[1].bias.copy_(torch.tensor([0.0, 0.0, 20.0]))
    plain, routed = Predictor(tiny_model), Predictor(with_head)
    batch = torch.stack([plain.preprocess(image) for image in (photo, to_grayscale(photo))])
    before, after = plain.predict(batch), routed.predict(batch)
    assert after[0] == before[0]
    assert after[1].grayscale and after[1].top_labels[0] == "gamma"
    assert after[1].top_confidences[0] == pytest.approx(1.0, abs=1e-6)
    assert before[1].top_confidences[0] < 0.99
