"""The scored row is the one definition of the output's columns: the scorer, the predictor,
the CLI, the UNKNOWN store and the dashboard read their names from it."""

from __future__ import annotations

import pytest

from meterid.core import (
    ERROR,
    OK,
    POOR_QUALITY,
    PREDICT_KEYS,
    TOP_K,
    UNKNOWN,
    ScoredRow,
    top_columns,
)


def test_every_column_list_derives_from_the_scored_row():
    from meterid.dashboard.data import SUMMARY_COLUMNS
    from meterid.inference.predictor import Prediction
    from meterid.scoring.sources import ROW, SOURCE
    from meterid.scoring.steps import OUTPUT_COLUMNS
    from meterid.scoring.store import TOP_COLUMNS

    columns = ScoredRow.columns()
    assert OUTPUT_COLUMNS == columns and columns[:2] == (ROW, SOURCE)
    assert TOP_COLUMNS == top_columns() and len(top_columns()) == 2 * TOP_K
    assert set(top_columns()) < set(columns)
    prediction = Prediction("a", False, ("a", "b"), (0.9, 0.1))
    assert set(prediction.columns()) < set(columns)  # the predictor fills the row's columns
    assert set(PREDICT_KEYS) - {"input"} < set(columns)
    assert set(SUMMARY_COLUMNS) < set(columns)


def test_a_row_is_built_only_from_its_schema():
    row = ScoredRow.of({"row": 3, "url": "a.jpg", "status": OK, "label": UNKNOWN,
                        "is_unknown": True})
    assert row.to_dict()["label"] == UNKNOWN and tuple(row.to_dict()) == ScoredRow.columns()
    with pytest.raises(TypeError, match="top1_labl"):
        ScoredRow.of({"row": 3, "url": "a.jpg", "status": OK, "top1_labl": "a"})


def test_the_unknown_store_keeps_flagged_photos_the_gate_let_through():
    flagged = ScoredRow(0, "a.jpg", OK, label=UNKNOWN, is_unknown=True)
    assert flagged.kept_as_unknown
    stopped = ScoredRow(0, "a.jpg", OK, label=POOR_QUALITY, is_unknown=True,
                        quality_issue="too dark")
    assert not stopped.kept_as_unknown
    assert not ScoredRow(0, "a.jpg", OK, label="a", is_unknown=False).kept_as_unknown
    assert not ScoredRow(0, "a.jpg", ERROR, error="broken link").kept_as_unknown
