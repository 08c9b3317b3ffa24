"""Progress off a terminal: log lines, never carriage returns; every item passes through."""

from __future__ import annotations

import logging

import pytest

from meterid.progress import progress


def test_off_a_terminal_progress_is_log_lines(caplog: pytest.LogCaptureFixture,
                                               capsys: pytest.CaptureFixture):
    with caplog.at_level(logging.INFO, logger="meterid.progress"):
        assert list(progress(iter(range(5)), "scoring", "row", total=7, initial=2,
                             every_s=0)) == list(range(5))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("scoring: 3/7 row (43%)")
    assert lines[-1].startswith("scoring: 7/7 row (100%)") and lines[-1].endswith("finished")
    assert len(lines) == 6 and "\r" not in capsys.readouterr().err


def test_a_sized_collection_gives_its_total(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="meterid.progress"):
        list(progress([1, 2], "embedding", "batch", every_s=3600))
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["embedding: 2/2 batch (100%)"]
