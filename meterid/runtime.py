"""Embedded, offline defaults for the tools meterid drives, set at entry points only.

Prefect runs flows without a server (ephemeral, state in a project-local PREFECT_HOME), MLflow
uses a SQLite store under ``mlflow/``, and every tool's analytics/telemetry is off so nothing
tries the network. Values already in the environment win, so a user can point at real servers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

# Tools' telemetry switches, all off.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def local_defaults(project_root: Path) -> dict[str, str]:
    root = project_root.resolve()
    return {
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(root / ".prefect"),
        # A fresh ephemeral Prefect database takes 13-18 s to start on 2 cores (default limit 20 s).
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
    }


def quiet_chatty_loggers() -> None:
    """Great Expectations and httpx (Prefect's client) log dozens of INFO lines per run."""
    for name in ("great_expectations", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def use_local_defaults(project_root: Path | None = None) -> None:
    """Apply ``local_defaults`` to os.environ without overriding what the user set."""
    for key, value in local_defaults(project_root or Path.cwd()).items():
        os.environ.setdefault(key, value)
