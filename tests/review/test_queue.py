"""The review queue of a scoring run: the unsettled photos and a seeded audit sample."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from meterid.core import ERROR, OK, POOR_QUALITY, UNKNOWN, ScoredRow
from meterid.review.photos import ReviewPhotos
from meterid.review.queue import AUDIT, NEEDS_A_PERSON, NEW_TYPE, QUALITY, review_queue


def _rows() -> pd.DataFrame:
    rows = [ScoredRow(i, f"http://x/{i}.jpg", OK, label="a", auto_accepted=True,
                      sha256=f"{i:064x}") for i in range(100)]
    rows += [ScoredRow(100 + i, f"u{i}", OK, label=UNKNOWN, auto_accepted=False,
                       sha256=f"u{i:063x}") for i in range(3)]
    rows += [ScoredRow(103 + i, f"p{i}", OK, label=POOR_QUALITY, auto_accepted=False,
                       quality_issue="too dark", sha256=f"p{i:063x}") for i in range(2)]
    rows += [ScoredRow(105 + i, f"r{i}", OK, label="b", auto_accepted=False,
                       prediction_set=["b", "c"], sha256=f"r{i:063x}") for i in range(4)]
    rows += [ScoredRow(109, "broken", ERROR, error="broken link"),
             ScoredRow(110, "again", OK, label=UNKNOWN, auto_accepted=False, sha256=f"u{0:063x}")]
    return pd.DataFrame([row.to_dict() for row in rows])


def test_the_queue_holds_every_unsettled_photo_once_and_an_audit_sample():
    queue = review_queue(_rows(), "run-1", share=0.02, floor=5)
    counts = queue["reason"].value_counts().to_dict()
    assert counts == {AUDIT: 5, NEEDS_A_PERSON: 4, NEW_TYPE: 3, QUALITY: 2}
    assert queue["sha256"].is_unique and "broken" not in set(queue["url"])
    assert queue.loc[queue["reason"] == AUDIT, "auto_accepted"].all()
    assert list(queue["row"]) == sorted(queue["row"])  # in the run's order, audits mixed in


def test_the_audit_sample_is_seeded_by_the_run_and_grows_with_the_share():
    def audited(run: str, share: float) -> list[int]:
        queue = review_queue(_rows(), run, share=share, floor=5)
        return list(queue.loc[queue["reason"] == AUDIT, "row"])

    assert audited("run-1", 0.02) == audited("run-1", 0.02)
    assert audited("run-1", 0.02) != audited("run-2", 0.02)
    assert len(audited("run-1", 0.1)) == 10
    assert len(review_queue(_rows().head(3), "run-1", 0.02, 5)) == 3  # fewer than the floor


def test_only_the_audit_sample_of_the_auto_accepted_photos_is_kept(tmp_path: Path):
    kept = ReviewPhotos(tmp_path / "review_photos")
    rows = _rows()
    accepted = rows[rows["auto_accepted"].fillna(False).astype(bool)]
    for row in accepted.itertuples():  # as scoring keeps them while the run goes on
        kept.pending("run-1").add(f"photo {row.row}".encode(),
                                  ScoredRow(row.row, row.url, OK, sha256=row.sha256,
                                            image_format="JPEG"))
    queue = review_queue(rows, "run-1", share=0.02, floor=5)
    audited = queue.loc[queue["reason"] == AUDIT, "sha256"]
    assert kept.keep_audited("run-1", audited) == 5
    assert all(kept.find(sha) for sha in audited)  # a reviewer sees them after the URL expired
    assert sum(kept.find(sha) is not None for sha in accepted["sha256"]) == 5  # the rest: gone
    assert not kept.pending("run-1").root.exists()
    assert kept.keep_audited("run-2", audited) == 0  # a run that kept nothing pending
