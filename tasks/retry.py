"""When a Prefect task may retry: only for failures a second attempt can fix."""

from __future__ import annotations

from typing import Any


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second read can fix (a flaky mount), never a data problem."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False
