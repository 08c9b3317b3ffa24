"""Shared fixtures: the repo's params, a small demo configuration and a generated dataset."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from meterid.stores import TELEMETRY_OFF

# Before any test module imports Prefect, MLflow, DVC or Great Expectations.
os.environ.update(TELEMETRY_OFF)

from meterid.config import DemoConfig, Params, load_params  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def params() -> Params:
    return load_params(REPO_ROOT / "params.yaml")


@pytest.fixture(scope="session")
def small_demo_cfg(params: Params) -> DemoConfig:
    """6 classes of 4..39 images (sizes hit all three split regimes), 3 held-out brands."""
    return params.demo.model_copy(update=dict(
        n_classes=6, total_images=100, imbalance_ratio=10, unknown_brands=3,
        unknown_images_per_brand=4, image_width=160, image_height=200))


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory, small_demo_cfg: DemoConfig) -> Path:
    """A generated demo dataset: <root>/raw and <root>/unknown. Treat as read-only."""
    from meterid.data.demo.generate import generate_demo

    root = tmp_path_factory.mktemp("demo")
    generate_demo(small_demo_cfg, root / "raw", root / "unknown")
    return root


def write_params(folder: Path, params: Params, demo: DemoConfig | None = None) -> Path:
    """A params.yaml in ``folder`` (relative paths resolve there), optionally with another demo."""
    import yaml

    raw = params.model_dump(mode="json", by_alias=True)
    if demo is not None:
        raw["demo"] = demo.model_dump(mode="json")
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder as the working directory, with its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    (tmp_path / "mlflow").mkdir()
    return tmp_path


def tiny_training(params: Params) -> Params:
    """params with training cut to seconds: 64 px (views and whole photos), one view (no extra
    rare-class views; one grayscale view for the grayscale head), 3 + 1 epochs, no workers."""
    train = params.train.model_copy(update=dict(
        image_size=64, eval_image_size=None, batch_size=16, workers=0, feature_views=1,
        view_budget=0, min_views_per_class=0, grayscale_head_views=1, channels_last=False,
        phase1=params.train.phase1.model_copy(update=dict(epochs=3)),
        phase2=params.train.phase2.model_copy(update=dict(epochs=1))))
    return params.model_copy(update={"train": train})


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API and database for the whole session (started once: ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_model():
    """A real (untrained) classifier at 64 px: scoring logic does not need a good model."""
    from meterid.decision.policy import DecisionPolicy
    from meterid.inference.bundle import ModelBundle
    from meterid.model.backbones import build_backbone
    from meterid.model.classifier import MeterClassifier, Preprocessing

    torch.manual_seed(0)
    model = MeterClassifier(build_backbone("resnet18", "none"), ["alpha", "beta", "gamma"])
    model.preprocessing = Preprocessing(64, model.preprocessing.mean, model.preprocessing.std)
    model.eval()
    bundle = ModelBundle.of(model, policy=DecisionPolicy.untested(0.5))
    return dataclasses.replace(bundle, source="memory", version=1)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """The tiny model logged, registered and exported through the real MLflow registry."""
    import mlflow

    from meterid import registry

    root = tmp_path_factory.mktemp("registry")
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    try:
        mlflow.set_experiment("tiny-model")  # the active experiment may be in another store
        with mlflow.start_run() as run:
            info = registry.log_model(tiny_model)
        version = registry.register(info.model_uri, run.info.run_id, {"accuracy": 0.5})
        registry.promote(version)
        return registry.export_model(f"models:/{registry.MODEL_NAME}@champion", root / "champion")
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
