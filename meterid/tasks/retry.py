"""When a Prefect task may retry: only for failures a second attempt can fix. Each decision is
logged with the failure it was taken on."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def _name(task_run: Any) -> str:
    return str(getattr(task_run, "name", "the task"))


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what a second read can fix (a flaky mount), never a data problem."""
    try:
        state.result()
    except OSError as error:
        log.warning("%s failed reading (%s): retrying", _name(task_run), error)
        return True
    except Exception as error:  # noqa: BLE001 - any other failure is final
        log.info("%s failed (%s: %s): not retried, a second read cannot fix it", _name(task_run),
                 type(error).__name__, error)
        return False
    return False  # the state holds no exception: nothing to retry


def retry_unless_model_missing(task: Any, task_run: Any, state: Any) -> bool:
    """A tracking server that blinked may answer next time; a registry without the alias or
    version will not (the error names the store: repeating it only delays it)."""
    from meterid.inference.bundle import BundleFormatError
    from meterid.registry import ModelNotFoundError

    try:
        state.result()
    except (ModelNotFoundError, BundleFormatError) as error:
        log.info("%s: %s: not retried", _name(task_run), error)
        return False
    except Exception as error:  # noqa: BLE001 - connection and server errors: a second try
        log.warning("%s failed (%s: %s): retrying", _name(task_run), type(error).__name__, error)
        return True
    return False
