"""Store resolution: the environment first, then params.yaml, relative paths the project's, and
errors that name the store and where its address came from."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from meterid.config import Params
from meterid.stores import (
    TrackingStoreError,
    absolute_tracking_uri,
    check_tracking_store,
    configure_stores,
    require_artifact_access,
    resolve_stores,
)


def test_params_yaml_store_is_the_projects_not_the_working_folders(params: Params, tmp_path):
    stores = resolve_stores(params.stores, tmp_path, environ={})
    assert stores.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert stores.tracking_from == "params.yaml stores.mlflow_tracking_uri"
    assert stores.artifact_root == tmp_path / "mlflow" / "artifacts"
    assert stores.prefect_api_url is None


def test_the_environment_wins_and_is_named(params: Params, tmp_path):
    environ = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999",
               "PREFECT_API_URL": "http://127.0.0.1:4999/api"}
    stores = resolve_stores(params.stores, tmp_path, environ=environ)
    assert (stores.tracking_uri, stores.tracking_from) == ("http://127.0.0.1:5999",
                                                           "MLFLOW_TRACKING_URI")
    assert stores.is_server and stores.prefect_api_url == "http://127.0.0.1:4999/api"


def test_params_yaml_s_store_exported_for_children_is_still_named_as_params_yaml(
        params: Params, tmp_path):
    exported = resolve_stores(params.stores, tmp_path, environ={}).tracking_uri
    again = resolve_stores(params.stores, tmp_path, environ={"MLFLOW_TRACKING_URI": exported})
    assert again.tracking_from == "params.yaml stores.mlflow_tracking_uri"


def test_only_relative_sqlite_paths_are_rebased(tmp_path: Path):
    assert absolute_tracking_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert absolute_tracking_uri("postgresql://u@h/db", tmp_path) == "postgresql://u@h/db"
    assert absolute_tracking_uri("sqlite:///a/m.db", tmp_path) == f"sqlite:///{tmp_path}/a/m.db"


def test_an_unreachable_tracking_server_names_itself_and_its_source(
        params: Params, tmp_path, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as probe:  # a loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    stores = resolve_stores(params.stores, tmp_path)
    with pytest.raises(TrackingStoreError, match=rf"cannot reach the MLflow tracking store "
                       rf"http://127.0.0.1:{port} \(from MLFLOW_TRACKING_URI\)"):
        check_tracking_store(stores)


def test_a_missing_alias_names_the_store_it_looked_in(
        params: Params, tmp_path, monkeypatch: pytest.MonkeyPatch):
    from meterid.registry import ModelNotFoundError, resolve_model_uri

    # setenv first, so that monkeypatch restores what configure_stores sets
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    configure_stores(params.stores, tmp_path)  # creates the project's empty store, checks it
    with pytest.raises(ModelNotFoundError, match=rf"no alias 'champion' in the MLflow tracking "
                       rf"store sqlite:///{tmp_path}/mlflow/mlflow.db \(from params.yaml"):
        resolve_model_uri("models:/meterid@champion")
    assert not (Path.cwd() / "mlflow.db").exists()


def test_off_a_terminal_mlflow_keeps_its_artifact_bars_out_of_the_log(
        params: Params, tmp_path, monkeypatch: pytest.MonkeyPatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):
        monkeypatch.setenv(name, "unset")  # so that monkeypatch restores what is set below
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    configure_stores(params.stores, tmp_path, check=False)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"  # pytest: not a tty


def test_artifacts_only_a_server_serves_are_named_for_a_database_store(
        params: Params, tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # restored after configure_stores sets it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    configure_stores(params.stores, tmp_path)
    require_artifact_access(f"file://{tmp_path}/mlflow/artifacts/1", "the experiment 'x'")
    with pytest.raises(TrackingStoreError, match=rf"model models:/meterid/1 keeps its artifacts "
                       rf"on the MLflow server \(mlflow-artifacts:/1/m\), which the MLflow "
                       rf"tracking store sqlite:///{tmp_path}/mlflow/mlflow.db \(from params.yaml "
                       rf"stores.mlflow_tracking_uri\) cannot reach: start `meterid serve`"):
        require_artifact_access("mlflow-artifacts:/1/m", "model models:/meterid/1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")  # the server reads them
    require_artifact_access("mlflow-artifacts:/1/m", "model models:/meterid/1")


def test_a_model_registered_through_the_server_is_refused_by_name_before_its_download(
        params: Params, tmp_path, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    from meterid.registry import load_classifier

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # restored after configure_stores sets it
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    configure_stores(params.stores, tmp_path)
    client = MlflowClient()  # as `meterid serve` registers: the bytes on the server
    client.create_registered_model("meterid")
    client.create_model_version("meterid", "mlflow-artifacts:/1/models/m-1/artifacts")
    client.set_registered_model_alias("meterid", "champion", "1")
    with pytest.raises(TrackingStoreError, match=r"model models:/meterid/1 keeps its artifacts "
                       r"on the MLflow server \(mlflow-artifacts:/1/models/m-1/artifacts\)"):
        load_classifier("models:/meterid@champion")  # the alias pinned, then refused
