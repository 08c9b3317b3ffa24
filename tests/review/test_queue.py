"""The review queue of a scoring run: the unsettled photos and a seeded audit sample."""

from __future__ import annotations

import pandas as pd

from meterid.core import ERROR, OK, POOR_QUALITY, UNKNOWN, ScoredRow
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
