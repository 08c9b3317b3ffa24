"""The scored row is the one definition of the output's columns: the scorer, the predictor,
the CLI, the UNKNOWN store and the dashboard read their names from it."""

from __future__ import annotations

from meterid.core import PREDICT_KEYS, TOP_K, ScoredRow, top_columns


def test_every_column_list_derives_from_the_scored_row():
    from meterid.dashboard.data import SCORING_COLUMNS
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
    assert set(SCORING_COLUMNS) < set(columns)
