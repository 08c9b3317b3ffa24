"""The audit loop through real scoring runs: a model whose auto-accepted photos are wrong 1 time
in 10 is caught once enough audits can judge, the next run auto-accepts nothing and sends every
photo it would have accepted to a person, and correct audits bring auto-accept back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from meterid.decision.conformal import AcceptRule
from meterid.decision.openset import OpenSetRule
from meterid.decision.policy import DecisionPolicy
from meterid.inference.predictor import Predictor
from meterid.review.audit import audits_to_certify
from meterid.review.photos import PENDING, ReviewPhotos
from meterid.review.queue import AUDIT
from meterid.review.store import field_verdict, open_store
from meterid.scoring.steps import score_list

PHOTOS = 120


def _photos(folder: Path, count: int, seed: int) -> Path:
    """``count`` distinct textured photos (they pass the quality gate) and their list."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(rng.integers(40, 220, (72, 72, 3), dtype=np.uint8)).save(paths[-1])
    listing = folder / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    return listing


def test_wrong_auto_accepts_stop_auto_accept_until_correct_audits_certify_it(
        tiny_model, params, tmp_path: Path, one_thread):
    accept_all = DecisionPolicy(OpenSetRule.fixed_confidence(0.0),
                                AcceptRule(0.0, 0.02, 0.1, True, 0.01, 0.0, 500),
                                tiny_model.policy.prediction_sets)
    predictor = Predictor(tiny_model.with_card(policy=accept_all))
    review = params.review.model_copy(update={"audit_share": 1.0, "audit_window": PHOTOS})
    project = params.model_copy(update={"review": review, "paths": params.paths.model_copy(
        update={"scoring_reports": tmp_path / "scoring", "unknown_store": tmp_path / "store",
                "review_db": tmp_path / "review.db"})})
    store = open_store(project)
    other = {label: next(c for c in tiny_model.classes if c != label)
             for label in tiny_model.classes}

    first = score_list(project, project.score, predictor, _photos(tmp_path / "night1", PHOTOS, 1))
    assert not first.summary["auto_accept_stopped"] and first.summary["review_queued"] == PHOTOS
    audited = [q for q in store.queue(first.run_id) if q.reason == AUDIT]
    assert len(audited) == PHOTOS and all(q.auto_accepted for q in audited)
    needed = audits_to_certify(project.evaluate.max_accept_error,
                               project.evaluate.accept_confidence)
    for i, photo in enumerate(audited):  # the reviewers find 1 in 10 wrong
        store.label(photo.sha256, "ana", other[photo.label] if i % 10 == 0 else photo.label,
                    tiny_model.classes)
        if i + 1 == needed - 1:
            assert field_verdict(store, 1, project).auto_accept  # too few to judge
    verdict = field_verdict(store, 1, project)
    assert not verdict.auto_accept and verdict.wrong == math.ceil(PHOTOS / 10)

    second = score_list(project, project.score, predictor,
                        _photos(tmp_path / "night2", PHOTOS, 2))
    assert second.summary["auto_accept_stopped"] and second.summary["auto_accept_share"] == 0
    assert "auto-accept stops" in second.summary["auto_accept"]
    queued = store.queue(second.run_id)
    assert len(queued) == PHOTOS and {q.reason for q in queued} == {AUDIT}  # all to a person
    kept = ReviewPhotos(project.paths.review_photos)  # what a reviewer will see, kept
    assert all(kept.find(q.sha256) for q in queued)
    # the first run's audit sample (every photo here) was kept when the run ended, its
    # pending copies are gone
    assert all(kept.find(q.sha256) for q in audited)
    assert not (kept.root / PENDING).exists() or not any((kept.root / PENDING).iterdir())
    for photo in queued:  # the model was right on all of them
        store.label(photo.sha256, "ana", photo.label, tiny_model.classes)
    assert field_verdict(store, 1, project).auto_accept

    third = score_list(project, project.score, predictor, _photos(tmp_path / "night3", 10, 3))
    assert not third.summary["auto_accept_stopped"] and third.summary["auto_accept_share"] == 1
