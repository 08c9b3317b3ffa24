"""The review queue of a scoring run: what goes to a person.

Every photo the product did not settle (UNKNOWN, stopped by the quality gate, or kept with a
prediction set to choose from) and an audit sample of the auto-accepted ones: a share
(``review.audit_share``) with a floor (``review.audit_min``), drawn at random with the run id
as the seed, so a rerun of the queue draws the same photos. The sample is shown like the
others: ``reason`` is for the audit, never for the reviewer's screen.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from meterid.core import OK, POOR_QUALITY, UNKNOWN

NEW_TYPE, QUALITY, NEEDS_A_PERSON, AUDIT = "new type?", "unreadable?", "needs a person", "audit"


def _seed(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")


def audit_sample(accepted: pd.DataFrame, run_id: str, share: float, floor: int) -> pd.DataFrame:
    """``share`` of the auto-accepted rows, at least ``floor`` (all when fewer), seeded by
    ``run_id``."""
    count = min(len(accepted), max(floor, math.ceil(share * len(accepted))))
    picked = np.random.default_rng(_seed(run_id)).choice(len(accepted), count, replace=False)
    return accepted.iloc[np.sort(picked)]


def review_queue(rows: pd.DataFrame, run_id: str, share: float, floor: int) -> pd.DataFrame:
    """The rows of a scoring output (``ScoredRow`` columns) that go to a person, one per photo
    (the first row of each sha256), with a ``reason`` column; error rows have no photo."""
    scored = rows[rows["status"] == OK].drop_duplicates("sha256")
    accepted = scored["auto_accepted"].fillna(False).astype(bool)
    reasons = pd.Series(NEEDS_A_PERSON, index=scored.index)
    reasons[scored["label"] == UNKNOWN] = NEW_TYPE
    reasons[scored["label"] == POOR_QUALITY] = QUALITY
    unsettled = scored[~accepted].assign(reason=reasons[~accepted])
    audited = audit_sample(scored[accepted], run_id, share, floor).assign(reason=AUDIT)
    return pd.concat([unsettled, audited]).sort_values("row").reset_index(drop=True)
