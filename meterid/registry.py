"""The model registry: log, register, promote and load meter classifiers with MLflow.

Aliases, not stages (deprecated in MLflow 3): every new version becomes ``challenger``;
``champion`` is the version that scoring loads (``models:/meterid@champion``). A version's
headline metrics and the test split it was evaluated on are version tags, so the promotion rule
and the dashboard read them without opening runs. A version's files are the model bundle
(``inference/bundle.py``: tensors and JSON, nothing pickled) under an MLmodel of the ``meterid``
flavour; loading and exporting read and copy that bundle.
"""

from __future__ import annotations

import copy
import importlib.metadata
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

# Submodule imports only: ruff sorts a bare ``import mlflow`` as first-party because of the
# project's mlflow/ store folder.
import mlflow.artifacts
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient

from meterid.inference.bundle import (
    BUNDLE_FORMAT,
    CARD_FILE,
    ModelBundle,
    read_bundle,
    write_bundle,
)
from meterid.model.classifier import MeterClassifier
from meterid.stores import describe_tracking_store, require_artifact_access
from meterid.tracking import DATA_VERSION_TAG

log = logging.getLogger(__name__)

MODEL_NAME = "meterid"
CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG_PREFIX = "metric."
SPLIT_TAG = "test_split_id"
PROMOTION_TAG = "promotion"
PROMOTED_BY_TAG, PROMOTED_AT_TAG = "promoted_by", "promoted_at"  # a person's promotion
# Written by export_model into the exported copy's metadata, so a folder knows its version.
EXPORTED_VERSION_KEY = "registry_version"
EXPORTED_SOURCE_KEY = "exported_from"
FLAVOR = "meterid"  # the MLmodel flavour of a bundle (inference/bundle.py)
MLMODEL_FILE = "MLmodel"
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]{32})$")
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class ModelNotFoundError(LookupError):
    """The registry has no such model, version or alias."""


# --- logging and registering -------------------------------------------------------------------

def _signature(model: MeterClassifier) -> ModelSignature:
    """Float32 NCHW images (any batch size) -> logits, shown by MLflow's UI."""
    size = model.preprocessing.image_size
    example = np.zeros((2, 3, size, size), dtype=np.float32)  # batch 2: the batch axis varies
    with torch.no_grad():
        logits = model.cpu().eval()(torch.from_numpy(example)).numpy()
    return infer_signature(example, logits)


def save_model(path: str, mlflow_model: Model, bundle: ModelBundle,
               signature: ModelSignature) -> None:
    """MLflow's flavour hook (``Model.log`` calls it): the model's files are the bundle's, and
    its MLmodel names them. Nothing is pickled: loading reads tensors and JSON only."""
    write_bundle(bundle, Path(path))
    mlflow_model.signature = signature
    mlflow_model.add_flavor(FLAVOR, bundle=CARD_FILE, format=BUNDLE_FORMAT,
                            meterid_version=importlib.metadata.version("meterid"))
    mlflow_model.save(str(Path(path) / MLMODEL_FILE))


def log_model(bundle: ModelBundle) -> ModelInfo:
    """Log the bundle to the active run as an MLflow model of the ``meterid`` flavour."""
    if mlflow.active_run() is None:
        raise RuntimeError("log_model needs an active MLflow run: call it in mlflow.start_run()")
    cpu = replace(bundle, model=copy.deepcopy(bundle.model).cpu().eval())  # the caller's model
    # artifact_path=None: Model.log still requires the deprecated argument positionally.
    return Model.log(artifact_path=None, name="model", flavor=sys.modules[__name__],
                     flavor_name=FLAVOR, bundle=cpu, signature=_signature(cpu.model))


def register(model_uri: str, run_id: str, metrics: dict[str, float],
             test_split_id: str | None = None) -> int:
    """A new version of MODEL_NAME, tagged ``metric.<name>`` and ``test_split_id`` so that
    promotion can compare versions evaluated on the same test images."""
    client = MlflowClient()
    try:
        client.create_registered_model(MODEL_NAME)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    tags = {f"{METRIC_TAG_PREFIX}{name}": str(float(value)) for name, value in metrics.items()}
    if test_split_id is not None:
        tags[SPLIT_TAG] = test_split_id
    logged = _LOGGED_MODEL_URI.match(model_uri)  # MLflow 3's log_model returns models:/m-<id>
    version = client.create_model_version(MODEL_NAME, source=model_uri, run_id=run_id, tags=tags,
                                          model_id=logged[1] if logged else None)
    log.info("registered %s version %s from %s", MODEL_NAME, version.version, model_uri)
    return int(version.version)


# --- aliases -------------------------------------------------------------------------------------

def _get_version(client: MlflowClient, version: int, name: str = MODEL_NAME) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as error:
        if error.error_code != _NOT_FOUND:
            raise
        raise ModelNotFoundError(f"model {name!r} has no version {version} in "
                                 f"{describe_tracking_store()}") from error


def _alias_version(client: MlflowClient, alias: str, name: str = MODEL_NAME) -> ModelVersion | None:
    """The version holding ``alias``, None without one. Read from the registered model's alias
    map: ``get_model_version_by_alias`` reports a missing alias as an invalid parameter."""
    try:
        version = client.get_registered_model(name).aliases.get(alias)
    except MlflowException as error:
        if error.error_code != _NOT_FOUND:
            raise
        return None
    return client.get_model_version(name, str(version)) if version is not None else None


def _aliases_by_version(client: MlflowClient) -> dict[int, list[str]]:
    """From the registered model: ``search_model_versions`` may return versions without aliases."""
    by_version: dict[int, list[str]] = {}
    for alias, version in client.get_registered_model(MODEL_NAME).aliases.items():
        by_version.setdefault(int(version), []).append(alias)
    return {version: sorted(aliases) for version, aliases in by_version.items()}


def _metric_tag(version: ModelVersion, metric: str) -> float | None:
    value = version.tags.get(f"{METRIC_TAG_PREFIX}{metric}")
    return float(value) if value is not None else None


def _promotion_decision(version: ModelVersion, value: float, champion: ModelVersion | None,
                        auto_promote: bool, margin: float, metric: str,
                        split_id: str | None, field: tuple[float, float] | None = None
                        ) -> tuple[bool, str]:
    """Whether ``version`` takes ``champion``, and why (kept as a version tag). ``field``:
    both models' accuracy on the same reviewed field photos; a version worse there stays
    challenger, however it does on the test split."""
    if champion is None:
        return True, "no champion yet"
    if champion.version == version.version:
        return True, "already champion"
    if not auto_promote:
        return False, f"auto promotion is off; champion stays version {champion.version}"
    champion_split = champion.tags.get(SPLIT_TAG)
    if split_id is None or split_id != champion_split:
        return False, (f"not comparable: champion version {champion.version} was evaluated on "
                       f"test split {champion_split!r}, this version on {split_id!r}")
    best = _metric_tag(champion, metric)
    if best is None:
        return False, f"champion version {champion.version} has no {metric} tag to compare"
    # A small tolerance, so "better by exactly the margin" survives float rounding.
    if value - best < margin - 1e-9:
        return False, f"{metric} {value:.4f} < champion {best:.4f} + margin {margin}"
    better = f"{metric} {value:.4f} >= champion {best:.4f} + margin {margin}"
    if field is not None and field[0] < field[1]:
        return False, (f"{better}, but field accuracy {field[0]:.4f} < champion's "
                       f"{field[1]:.4f} on the same reviewed photos")
    return True, better + (f"; field accuracy {field[0]:.4f} >= champion's {field[1]:.4f}"
                           if field is not None else "")


def apply_promotion_rule(version: int, metrics: dict, auto_promote: bool, margin: float,
                         metric: str = "accuracy", test_split_id: str | None = None,
                         field: tuple[float, float] | None = None) -> list[str]:
    """Make ``version`` the challenger, and the champion when there is none or, with
    ``auto_promote``, when it beats the champion by ``margin`` on the same test split (scores on
    different test images are not comparable) and, given ``field`` (its and the champion's
    accuracy on the same reviewed field photos), is not worse in the field. Returns the
    version's aliases afterwards."""
    client = MlflowClient()
    candidate = _get_version(client, version)
    value = metrics.get(metric, _metric_tag(candidate, metric))
    if value is None:
        raise ValueError(f"no {metric!r} in metrics or tags of version {version}; "
                         f"have {sorted(metrics)}")
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, str(version))
    promoted, reason = _promotion_decision(
        candidate, float(value), _alias_version(client, CHAMPION), auto_promote, margin, metric,
        test_split_id if test_split_id is not None else candidate.tags.get(SPLIT_TAG), field)
    log.info("version %s %s champion: %s", version, "becomes" if promoted else "is not", reason)
    client.set_model_version_tag(MODEL_NAME, str(version), PROMOTION_TAG, reason)
    if promoted:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    return _aliases_by_version(client).get(version, [])


class AliasMovedError(RuntimeError):
    """The champion changed since the person deciding looked at it."""


def promote(version: int, by: str | None = None, expected_champion: int | None = None) -> None:
    """Move ``champion`` to ``version`` (a manual decision, no rule applied); ``by`` and the
    time are kept as the version's tags. With ``expected_champion``, refuse when the champion
    is no longer that version (someone promoted meanwhile)."""
    client = MlflowClient()
    _get_version(client, version)
    if expected_champion is not None:
        current = _alias_version(client, CHAMPION)
        now = None if current is None else int(current.version)
        if now != expected_champion:
            raise AliasMovedError(f"the champion is version {now}, not {expected_champion} as "
                                  "when you chose: look again before promoting")
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, str(version))
    if by is not None:
        client.set_model_version_tag(MODEL_NAME, str(version), PROMOTED_BY_TAG, by)
        client.set_model_version_tag(MODEL_NAME, str(version), PROMOTED_AT_TAG,
                                     datetime.now(UTC).isoformat(timespec="seconds"))
    log.info("champion is now %s version %s%s", MODEL_NAME, version, f" ({by})" if by else "")


def list_versions() -> list[dict]:
    """Every version, newest first, with its aliases and ``metric.*`` tags as floats."""
    client = MlflowClient()
    try:
        aliases = _aliases_by_version(client)
    except MlflowException as error:
        if error.error_code != _NOT_FOUND:
            raise
        return []
    rows = []
    data_versions: dict[str | None, str | None] = {}
    for version in client.search_model_versions(f"name = '{MODEL_NAME}'"):
        if version.run_id not in data_versions:
            data_versions[version.run_id] = _run_tag(client, version.run_id, DATA_VERSION_TAG)
        metrics = {key.removeprefix(METRIC_TAG_PREFIX): float(value)
                   for key, value in version.tags.items() if key.startswith(METRIC_TAG_PREFIX)}
        rows.append({
            **metrics,
            "version": int(version.version),
            "aliases": aliases.get(int(version.version), []),
            "run_id": version.run_id,
            "created": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(),
            DATA_VERSION_TAG: data_versions[version.run_id],
            SPLIT_TAG: version.tags.get(SPLIT_TAG),
            PROMOTION_TAG: version.tags.get(PROMOTION_TAG),
            PROMOTED_BY_TAG: version.tags.get(PROMOTED_BY_TAG),
            PROMOTED_AT_TAG: version.tags.get(PROMOTED_AT_TAG),
        })
    return sorted(rows, key=lambda row: row["version"], reverse=True)


def _run_tag(client: MlflowClient, run_id: str | None, tag: str) -> str | None:
    """A tag of the run that logged a version (None when the run or the tag is gone)."""
    if not run_id:
        return None
    try:
        return client.get_run(run_id).data.tags.get(tag)
    except MlflowException:
        return None


def download_evaluation(version: int, to: Path) -> Path | None:
    """The evaluation reports logged with ``version`` (its confusion matrix, per-class
    metrics), downloaded into ``to``; returns their folder, None when the version was logged
    without them. An MlflowException when the store cannot list or give them."""
    client = MlflowClient()
    run_id = _get_version(client, version).run_id
    if run_id is None or not client.list_artifacts(run_id, "evaluation"):
        return None
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation",
                                                    dst_path=str(to)))


# --- loading and exporting -----------------------------------------------------------------------

def _resolve(uri: str) -> tuple[str, int | None]:
    """A registry URI pinned to a version (an alias read now, once), and that version."""
    match = _MODELS_URI.match(uri)
    if match is None:
        return uri, None
    client, name = MlflowClient(), match["name"]
    if match["alias"]:
        found = _alias_version(client, match["alias"], name)
        if found is None:
            raise ModelNotFoundError(f"model {name!r} has no alias {match['alias']!r} in "
                                     f"{describe_tracking_store()}: register a model and "
                                     "promote a version there first")
        version = int(found.version)
    else:
        version = int(_get_version(client, int(match["version"]), name).version)
    return f"models:/{name}/{version}", version


def model_uri(model: str | None, default: str) -> str:
    """What a user typed as the model: a bare alias ("champion", "challenger") means that alias
    of meterid; a URI or an existing folder stays as is; nothing means ``default``."""
    if model is None:
        return default
    if ":" in model or Path(model).exists():
        return model
    return f"models:/{MODEL_NAME}@{model}"


def resolve_model_uri(uri: str) -> str:
    """An alias pinned to the version it names now (a folder or other URI unchanged), so a run
    that loads the model twice cannot straddle a promotion."""
    return uri if Path(uri).is_dir() else _resolve(uri)[0]


def _read(path: str, source: str, version: int | None) -> ModelBundle:
    if version is None:  # an exported folder records the version it was exported as
        version = (Model.load(path).metadata or {}).get(EXPORTED_VERSION_KEY)
    return read_bundle(Path(path), source, version)


def load_classifier(uri: str) -> ModelBundle:
    """Load from ``models:/meterid@champion``, ``models:/meterid/3``, ``runs:/<id>/model``,
    ``models:/<model id>`` or an exported folder. An alias is resolved at call time."""
    if Path(uri).is_dir():
        return _read(uri, uri, None)
    source, version = _resolve(uri)
    if version is not None and (pinned := _MODELS_URI.match(source)):
        require_artifact_access(MlflowClient().get_model_version_download_uri(
            pinned["name"], str(version)), f"model {source}")
    with tempfile.TemporaryDirectory(prefix="meterid-model-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
        loaded = _read(path, source, version)
    log.info("loaded %s (%s)", source, uri)
    return loaded


def _clear_export_dir(out_dir: Path) -> None:
    """Overwrite a previous export, but never a folder holding something else."""
    if not out_dir.exists():
        return
    if any(out_dir.iterdir()) and not (out_dir / MLMODEL_FILE).is_file():
        raise FileExistsError(f"{out_dir} exists and is not an exported model; choose another "
                              "folder or empty it")
    shutil.rmtree(out_dir)


def export_model(uri: str, out_dir: Path) -> Path:
    """Copy a model out of MLflow into ``out_dir`` (replacing an earlier export), so that
    ``load_classifier(str(out_dir))`` works with no tracking server. The copy's metadata records
    the registry version and the URI it came from."""
    source, version = _resolve(uri)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir.parent) as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(staged)))
        mlmodel = Model.load(str(path))
        mlmodel.metadata = {**(mlmodel.metadata or {}), EXPORTED_VERSION_KEY: version,
                            EXPORTED_SOURCE_KEY: source}
        mlmodel.save(str(path / MLMODEL_FILE))
        _clear_export_dir(out_dir)
        shutil.move(str(path), out_dir)
    log.info("exported %s to %s", source, out_dir)
    return out_dir
