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
    return False  # the state holds no exception: nothing to retry


def retry_unless_model_missing(task: Any, task_run: Any, state: Any) -> bool:
    """A tracking server that blinked may answer next time; a registry without the alias or
    version will not (the error names the store: repeating it only delays it)."""
    from meterid.registry import ModelMetadataError, ModelNotFoundError

    try:
        state.result()
    except (ModelNotFoundError, ModelMetadataError):
        return False
    except Exception:  # noqa: BLE001 - connection and server errors are worth a second try
        return True
    return False
    return False
