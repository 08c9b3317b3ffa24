"""The product's words, shared by every layer and importing nothing: the label a photo gets
when the model is unsure, the statuses a scored row can have, how many predictions it keeps, and
the scored row itself (``ScoredRow``), from which every list of output columns derives."""

from __future__ import annotations

from dataclasses import dataclass, fields

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
    error row."""

    row: int                       # the input's line, 0-based: outputs keep input order
    url: str                       # the URL or path as given
    status: str                    # OK or ERROR
    error: str | None              # why the row failed (ERROR), naming the input
    label: str | None              # a class, UNKNOWN or POOR_QUALITY
    is_unknown: bool | None
    top1_label: str | None         # the top-3 predictions and calibrated confidences, kept
    top1_conf: float | None        # for UNKNOWN and POOR_QUALITY photos too
    top2_label: str | None
    top2_conf: float | None
    top3_label: str | None
    top3_conf: float | None
    open_set_score: float | None   # the UNKNOWN rule's score (UNKNOWN under its threshold)
    auto_accepted: bool | None     # trusted without review under the certified bound
    prediction_set: list[str] | None  # the conformal candidates, most probable first
    grayscale: bool | None         # no colour: read by the grayscale head
    quality_issue: str | None      # why the quality gate stopped it
    brightness: float | None
    contrast: float | None
    sharpness: float | None
    glare: float | None
    sha256: str | None             # of the downloaded bytes
    bytes: int | None
    image_format: str | None
    model_version: str | None
    scored_at: str
    run_id: str

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

# What `meterid predict --json` prints per input: the input as typed, then the row's decision.
PREDICT_KEYS = ("input", "status", "error", "label", "is_unknown", *top_columns(),
                "open_set_score", "auto_accepted", "prediction_set", "grayscale",
                "quality_issue", "model_version")
