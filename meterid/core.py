"""The product's words, shared by every layer and importing nothing: the label a photo gets
when the model is unsure, the statuses a scored row can have, how many predictions it keeps, and
the scored row itself (``ScoredRow``), from which every list of output columns derives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

UNKNOWN = "UNKNOWN"             # the label of a photo the open-set rule flags
POOR_QUALITY = "POOR_QUALITY"   # the label of a photo the quality gate stops
OK, ERROR = "ok", "error"       # a row's status: scored, or failed with its error
TOP_K = 3                       # predictions and confidences every scored row keeps


def top_columns(k: int = TOP_K) -> tuple[str, ...]:
    """top1_label, top1_conf, ..., topk_conf."""
    return tuple(f"top{rank}_{part}" for rank in range(1, k + 1) for part in ("label", "conf"))


@dataclass(frozen=True)
class ScoredRow:
    """One input of a scoring run as it comes out, scored or with its error: the one definition
    of the output's columns (Parquet, CSV), the CLI's JSON keys and the dashboard's reads.
    Every field but ``row``, ``url``, ``status``, ``scored_at`` and ``run_id`` is None on an
    error row; ``run_id`` is set by the run that writes the row."""

    row: int                                 # the input's line, 0-based: output keeps the order
    url: str                                 # the URL or path as given
    status: str                              # OK or ERROR
    error: str | None = None                 # why the row failed (ERROR), naming the input
    label: str | None = None                 # a class, UNKNOWN or POOR_QUALITY
    is_unknown: bool | None = None
    top1_label: str | None = None            # the top-3 predictions and calibrated
    top1_conf: float | None = None           # confidences, kept for UNKNOWN and POOR_QUALITY
    top2_label: str | None = None
    top2_conf: float | None = None
    top3_label: str | None = None
    top3_conf: float | None = None
    open_set_score: float | None = None      # the UNKNOWN rule's score (UNKNOWN: under it)
    auto_accepted: bool | None = None        # trusted without review under the certified bound
    prediction_set: list[str] | None = None  # the conformal candidates, most probable first
    grayscale: bool | None = None            # no colour: read by the grayscale head
    quality_issue: str | None = None         # why the quality gate stopped it
    brightness: float | None = None
    contrast: float | None = None
    sharpness: float | None = None
    glare: float | None = None
    sha256: str | None = None                # of the downloaded bytes
    bytes: int | None = None
    image_format: str | None = None
    model_version: int | None = None
    scored_at: str = ""
    run_id: str = ""

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, columns: Mapping[str, Any]) -> ScoredRow:
        """A row from output columns; a name outside the schema is a TypeError (a typo fails
        where it is made, not in a reader)."""
        return cls(**columns)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def kept_as_unknown(self) -> bool:
        """Whether the UNKNOWN store keeps the photo: the open-set rule flagged it and the
        quality gate did not stop it (a stopped photo is POOR_QUALITY, not a new type)."""
        return bool(self.is_unknown) and not self.quality_issue

# What `meterid predict --json` prints per input: the input as typed, then the row's decision.
PREDICT_KEYS = ("input", "status", "error", "label", "is_unknown", *top_columns(),
                "open_set_score", "auto_accepted", "prediction_set", "grayscale",
                "quality_issue", "model_version")
