"""Process-wide settings for entry points (CLI, dashboard, benchmarks), set there only.

Where the stores are (MLflow, Prefect) is ``meterid.stores``'s job, from params.yaml and the
environment; this module only keeps third-party loggers quiet.
"""

from __future__ import annotations

import logging


def quiet_chatty_loggers() -> None:
    """Great Expectations and httpx (Prefect's client) log dozens of INFO lines per run."""
    for name in ("great_expectations", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
