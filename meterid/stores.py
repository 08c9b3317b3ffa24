"""Where a run finds its state: one resolution for every way a flow is started.

A flow run by the CLI, by ephemeral Prefect, by a Prefect worker or inside a Dask worker calls
``configure_stores`` first. It reads ``params.yaml``'s ``stores`` section and the environment
(``MLFLOW_TRACKING_URI`` wins when set), resolves relative paths against the project (the folder
of params.yaml, not whatever the working directory happens to be), sets the result for MLflow in
this process through the environment (so child processes inherit it), and checks that the
tracking store answers. Without it a worker-run flow silently opened a new, empty ``./mlflow.db``
and kept artifacts in ``./mlruns`` of its working folder.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from meterid.config import Params, StoresConfig

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
PREFECT_API_ENV = "PREFECT_API_URL"
# Tools' telemetry switches, all off: set wherever a run starts, a worker's flow run included.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}
_SQLITE = "sqlite:///"
_SERVER_ARTIFACTS = "mlflow-artifacts:"  # artifacts a tracking server serves (and only it)
_HEALTH_TIMEOUT_S = 5.0


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be reached or opened; the message names it."""


@dataclass(frozen=True)
class Stores:
    """The resolved stores of this process, and where each value came from."""

    tracking_uri: str
    tracking_from: str  # "MLFLOW_TRACKING_URI" or "params.yaml stores.mlflow_tracking_uri"
    artifact_root: Path  # for experiments created on a database store (a server has its own)
    prefect_api_url: str | None  # None: ephemeral Prefect in prefect_home

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))

    def describe(self) -> str:
        return f"the MLflow tracking store {self.tracking_uri} (from {self.tracking_from})"


_current: Stores | None = None


# The label store's SQLAlchemy URL, over params.yaml's review.store (`meterid serve --postgres`).
REVIEW_STORE_ENV = "METERID_REVIEW_STORE"

def project_root(params_file: Path | str) -> Path:
    return Path(params_file).resolve().parent


def absolute_tracking_uri(uri: str, root: Path) -> str:
    """A relative ``sqlite:///path`` made absolute under ``root``; other URIs unchanged."""
    if uri.startswith(_SQLITE) and not uri.startswith(_SQLITE + "/"):
        return f"{_SQLITE}{(root / uri.removeprefix(_SQLITE)).resolve()}"
    return uri


def resolve_stores(cfg: StoresConfig, root: Path,
                   environ: dict[str, str] | os._Environ = os.environ) -> Stores:
    """The stores for a project at ``root``: the environment first, then params.yaml. The
    environment names params.yaml's own store when ``configure_stores`` put it there (for this
    process's reruns and its children): the source is then params.yaml, not the user."""
    configured = absolute_tracking_uri(cfg.mlflow_tracking_uri, root)
    exported = absolute_tracking_uri(environ.get(TRACKING_ENV) or configured, root)
    if exported != configured:
        uri, source = exported, TRACKING_ENV
    else:
        uri, source = configured, "params.yaml stores.mlflow_tracking_uri"
    artifact_root = cfg.mlflow_artifact_root
    return Stores(
        tracking_uri=uri,
        tracking_from=source,
        artifact_root=artifact_root if artifact_root.is_absolute() else root / artifact_root,
        prefect_api_url=environ.get(PREFECT_API_ENV) or None,
    )


def configure_stores(cfg: StoresConfig, root: Path, check: bool = True) -> Stores:
    """Resolve the stores, make them this process's and its children's, and (``check``) make
    sure the tracking store answers; returns what was set."""
    global _current
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    if not sys.stderr.isatty():  # MLflow's artifact bars write carriage returns into a log
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stores = resolve_stores(cfg, root)
    if stores.prefect_api_url is None:  # ephemeral Prefect: a project-local home
        home = cfg.prefect_home if cfg.prefect_home.is_absolute() else root / cfg.prefect_home
        os.environ.setdefault("PREFECT_HOME", str(home))
        # A fresh ephemeral database takes 13-18 s to start on 2 cores (default limit 20 s).
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if stores.tracking_uri.startswith(_SQLITE):
        Path(stores.tracking_uri.removeprefix(_SQLITE)).parent.mkdir(parents=True, exist_ok=True)
    # The environment, not mlflow.set_tracking_uri: MLflow reads it on every call, children
    # inherit it, and a later change of it (a test, another project) is not shadowed.
    os.environ[TRACKING_ENV] = stores.tracking_uri
    _current = stores
    if check:
        check_tracking_store(stores)
    log.debug("stores: %s", stores)
    return stores


def check_tracking_store(stores: Stores) -> None:
    """Fail now, naming the store, rather than after MLflow's minutes of retries."""
    if stores.is_server:
        import requests

        url = stores.tracking_uri.rstrip("/") + "/health"
        try:
            response = requests.get(url, timeout=_HEALTH_TIMEOUT_S)
        except requests.RequestException as error:
            raise TrackingStoreError(f"cannot reach {stores.describe()}: {error}") from error
        if response.status_code != 200:
            raise TrackingStoreError(f"{stores.describe()} answered {url} with HTTP "
                                     f"{response.status_code}")
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(stores.tracking_uri).search_experiments(max_results=1)
    except Exception as error:  # any backend's failure: name the store it came from
        raise TrackingStoreError(f"cannot open {stores.describe()}: {error}") from error


def require_artifact_access(location: str | None, what: str) -> None:
    """Fail now, naming the store, when ``what``'s artifacts sit on an MLflow server
    (``mlflow-artifacts:/``: it was made through ``meterid serve``) and this process opens the
    database directly: MLflow would refuse only at the first read or write, after the work, in
    a traceback."""
    from mlflow.tracking import get_tracking_uri

    if (location or "").startswith(_SERVER_ARTIFACTS) and not get_tracking_uri().startswith(
            ("http://", "https://")):
        raise TrackingStoreError(
            f"{what} keeps its artifacts on the MLflow server ({location}), which "
            f"{describe_tracking_store()} cannot reach: start `meterid serve` and export the "
            f"{TRACKING_ENV} it prints")


def current_stores() -> Stores | None:
    return _current


def describe_tracking_store() -> str:
    """The store this process uses, for error messages (configured or MLflow's own)."""
    if _current is not None:
        return _current.describe()
    from mlflow.tracking import get_tracking_uri

    return f"the MLflow tracking store {get_tracking_uri()} (MLflow's default: not configured)"


def open_project(params_file: Path | str = "params.yaml") -> Params:
    """What every flow does first: read params.yaml and configure the stores it names."""
    from meterid.config import load_params

    params = load_params(params_file)
    configure_stores(params.stores, project_root(params_file))
    return params
