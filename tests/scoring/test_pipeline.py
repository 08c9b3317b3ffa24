"""The streaming scorer on a real local server: every row out, bad ones with their reason."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from meterid.config import FetchConfig, Params
from meterid.core import OK, POOR_QUALITY, ScoredRow
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.scoring.pipeline import BatchScorer
from meterid.scoring.store import UnknownStore
from tests.scoring.conftest import Routes

BAD = {
    "/nothing-here.jpg": "HTTP 404",
    "/500": "HTTP 500",
    "/slow-headers": "read timeout",
    "/slow-body": "too slow",
    "/oversize": "too large",
    "/html": "not an image: content type 'text/html'",
    "/html-as-jpeg": "not an image (cannot identify image file; starts with '<html>",
    "/truncated.jpg": "truncated or corrupt image data",
    "/zero.jpg": "empty file",
    "/bomb.png": "decompression bomb",
    "/loop-a": "redirect loop",
}
GOOD = ["/ok.jpg", "/cmyk.jpg", "/grey16.png", "/palette.png", "/rgba.png", "/rotated.jpg",
        "/hop", "/flaky"]


def _scorer(model, params: Params, fetch: FetchConfig, **kwargs) -> BatchScorer:
    return BatchScorer(Predictor(model), Fetcher(fetch, pool_size=4),
                       params.score.quality, params.validate_.max_pixels, batch_size=4,
                       concurrency=4, **kwargs)


@pytest.fixture
def scored(tiny_model, params, fast_fetch, hostile_server, one_thread) -> dict[int, ScoredRow]:
    sources = ([hostile_server + route for route in [*GOOD, *BAD]]
               + ["", "ftp://127.0.0.1/x.jpg", "file:///etc/passwd"])
    rows = list(_scorer(tiny_model, params, fast_fetch).score(enumerate(sources)))
    assert sorted(row.row for row in rows) == list(range(len(sources)))  # count in == out
    return {row.row: row for row in rows}


def test_every_bad_input_is_an_error_row_with_its_reason(scored: dict[int, ScoredRow]):
    offset = len(GOOD)
    for index, (route, reason) in enumerate(BAD.items()):
        row = scored[offset + index]
        assert row.status == "error", route
        assert reason in row.error, (route, row.error)
        assert row.label is None
    tail = [scored[len(GOOD) + len(BAD) + k].error for k in range(3)]
    assert tail[0] == "empty url"
    assert tail[1].startswith("unsupported scheme 'ftp'")
    assert tail[2].startswith("unsupported scheme 'file'")


def test_odd_but_valid_images_are_scored(scored: dict[int, ScoredRow]):
    for index, route in enumerate(GOOD):
        row = scored[index]
        assert row.status == OK, (route, row.error)
        assert row.top1_label in {"alpha", "beta", "gamma"}
        confidences = [row.top1_conf, row.top2_conf, row.top3_conf]
        assert confidences == sorted(confidences, reverse=True)
        assert np.isclose(sum(confidences), 1.0, atol=1e-4)  # 3 classes: top-3 is everything
        assert len(row.sha256) == 64 and row.bytes > 0
        assert row.model_version == 1


def test_quality_gate_labels_dark_photos_and_keeps_their_top3(tiny_model, params, fast_fetch,
                                                              hostile_server, one_thread):
    rows = list(_scorer(tiny_model, params, fast_fetch).score(
        enumerate([hostile_server + "/dark.jpg", hostile_server + "/ok.jpg"])))
    dark, ok = sorted(rows, key=lambda row: row.row)
    assert dark.label == POOR_QUALITY and "too dark" in dark.quality_issue
    assert dark.top1_label is not None and dark.top3_conf is not None
    assert ok.label != POOR_QUALITY and ok.quality_issue is None
    assert dark.brightness < params.score.quality.min_brightness < ok.brightness


def test_same_url_is_fetched_once_and_same_bytes_inferred_once(tiny_model, params, fast_fetch,
                                                              hostile_server, one_thread):
    Routes.hits.clear()
    sources = [hostile_server + "/ok.jpg"] * 5 + [hostile_server + "/ok-copy.jpg"]
    scorer = _scorer(tiny_model, params, fast_fetch)
    calls = []
    original = scorer.predictor.predict
    scorer.predictor.predict = lambda batch: calls.append(len(batch)) or original(batch)
    rows = sorted(scorer.score(enumerate(sources)), key=lambda row: row.row)
    assert Routes.hits["/ok.jpg"] == 1 and Routes.hits["/ok-copy.jpg"] == 1
    assert len({(r.top1_label, r.top1_conf, r.sha256) for r in rows}) == 1
    assert sum(calls) == 1


def test_unknown_photos_are_stored_content_addressed(tiny_model, params, fast_fetch,
                                                     hostile_server, tmp_path: Path, one_thread):
    from meterid.decision.policy import DecisionPolicy

    store = UnknownStore(tmp_path / "store")
    strict = tiny_model.with_card(policy=DecisionPolicy.untested(0.99))
    scorer = _scorer(strict, params, fast_fetch, on_unknown=lambda data, row: store.add(
        data, dataclasses.replace(row, run_id="r1")))
    rows = list(scorer.score(enumerate([hostile_server + "/ok.jpg",
                                        hostile_server + "/ok-copy.jpg"])))
    assert all(row.label == "UNKNOWN" and row.is_unknown for row in rows)
    records = store.records()
    assert len(records) == 1  # the same bytes under two URLs: one photo
    record = records.iloc[0]
    assert sorted(record["urls"]) == sorted(row.url for row in rows)
    assert Path(record["path"]).read_bytes() == Routes.bodies["/ok.jpg"]
    assert record["top1_label"] == rows[0].top1_label
