"""What a training run records besides the model: parameters, data and code versions, curves.

Plain functions over MLflow's fluent API; the caller owns the run (``mlflow.start_run``) and the
tracking URI, so nothing here configures MLflow.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import yaml
from mlflow.tracking.fluent import log_metrics
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

log = logging.getLogger(__name__)

# MLflow keys may hold letters, digits, "_", "-", ".", " " and "/"; anything else is replaced.
_UNSAFE_KEY_CHARS = re.compile(r"[^\w\-. /]")
_TRUNCATED = "..."


DATA_VERSION_TAG = "data_version"  # the training run's DVC data version

def _param_value(value: object) -> str:
    """A parameter as MLflow stores it: a string, cut to MLflow's length limit."""
    if isinstance(value, (list, tuple)):
        text = json.dumps(list(value), default=str)
    else:
        text = str(value)
    if len(text) > MAX_PARAM_VAL_LENGTH:
        text = text[: MAX_PARAM_VAL_LENGTH - len(_TRUNCATED)] + _TRUNCATED
    return text


def _flatten(params: Mapping, prefix: str, out: dict[str, str]) -> None:
    for key, value in params.items():
        name = _UNSAFE_KEY_CHARS.sub("_", f"{prefix}{key}")[:MAX_ENTITY_KEY_LENGTH]
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", out)
        else:
            out[name] = _param_value(value)


def flatten_params(params: dict) -> dict[str, str]:
    """Nested ``params.yaml`` sections as dotted keys (``train.phase1.lr``), ready for
    ``mlflow.log_params``: MLflow params are flat strings with a length limit."""
    out: dict[str, str] = {}
    _flatten(params, "", out)
    return out


def dvc_data_version(dvc_file: Path) -> str | None:
    """The hash DVC recorded for the first output of a ``.dvc`` file (``md5 ….dir`` for a
    folder), i.e. the exact data a run trained on; None when the file or the hash is missing."""
    if not dvc_file.is_file():
        return None
    document = yaml.safe_load(dvc_file.read_text()) or {}
    outs = document.get("outs") or [None]
    md5 = outs[0].get("md5") if isinstance(outs[0], dict) else None
    return str(md5) if md5 else None


def tracking_file(root: Path, folder: Path) -> str | None:
    """The ``.dvc`` file (relative to ``root``) that tracks ``folder`` (``dvc add``), if any:
    ``data.dvc`` in this repository, ``data/raw.dvc`` in a ``meterid init`` project."""
    target = (root / folder).resolve()
    # Where `dvc add` puts it (beside the folder), or a .dvc file moved to the root.
    candidates = [target.with_name(f"{target.name}.dvc"), *sorted(root.glob("*.dvc"))]
    for dvc_file in (c for c in candidates if c.is_file()):
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        if any((dvc_file.parent / out["path"]).resolve() == target for out in outs):
            return dvc_file.relative_to(root.resolve()).as_posix()
    return None


def photos_version(root: Path, photos: Path) -> str | None:
    """The DVC version of the photo folder ``photos`` (relative to the project ``root``): the
    hash in the ``.dvc`` file that tracks it; None when no ``.dvc`` file tracks it."""
    dvc_file = tracking_file(root, photos)
    return dvc_data_version(root.resolve() / dvc_file) if dvc_file else None


def git_commit(repo: Path) -> str | None:
    """The checked-out commit, or None outside a git repository or without git: a run's code
    version is useful, never a reason to fail the run."""
    try:
        result = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        log.debug("git rev-parse failed in %s: %s", repo, error)
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def log_epoch_history(history: list[dict]) -> None:
    """Per-epoch losses as curves named ``phase<N>_<metric>`` with step = epoch.

    Each phase restarts its epochs at 1, hence one curve per phase. NaN values (a phase
    without validation data) are skipped rather than plotted as gaps.
    """
    for record in history:
        metrics = {
            f"phase{record['phase']}_{key}": float(value)
            for key, value in record.items()
            if key not in ("phase", "epoch") and not math.isnan(float(value))
        }
        if metrics:
            log_metrics(metrics, step=int(record["epoch"]))


def use_experiment(name: str) -> str:
    """Select (creating if needed) an experiment, its artifacts under the configured root: on a
    database store ``stores.mlflow_artifact_root``, on a tracking server the server's own
    (``--artifacts-destination``); never ``./mlruns`` of whatever the working folder is. A
    TrackingStoreError when the experiment keeps its artifacts where this store cannot reach."""
    from mlflow.tracking import MlflowClient, get_tracking_uri
    from mlflow.tracking.fluent import set_experiment

    from meterid.stores import current_stores, require_artifact_access

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        require_artifact_access(experiment.artifact_location, f"the experiment {name!r}")
    else:
        stores, uri = current_stores(), get_tracking_uri()
        location = None
        if not uri.startswith(("http://", "https://")):
            root = (stores.artifact_root if stores is not None and stores.tracking_uri == uri
                    else Path(uri.removeprefix("sqlite:///")).parent / "artifacts")
            location = root.resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
    return set_experiment(name).experiment_id
