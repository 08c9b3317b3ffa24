"""meterid's own log lines (the trainer's epochs, the progress of long passes, scoring's
counts) in each flow run's log, where the Prefect UI shows them beside the tasks' lines."""

from __future__ import annotations

import logging
import sys

from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

PACKAGE_LOGGER = "meterid"


class _RunLogHandler(APILogHandler):
    """Prefect's API handler, silent outside a run: a CLI process also logs before and after
    its flows, and those lines belong to no run (its console shows them)."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], MissingContextError):
            return
        super().handleError(record)


def show_meterid_logs_in_runs() -> None:
    """Send the ``meterid`` loggers' INFO lines to the running flow's log, once per process.

    A run started from the Prefect UI runs in a worker's process whose root logger passes only
    warnings: a 20-minute training showed its data checks, then nothing until it ended."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(_RunLogHandler())
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
