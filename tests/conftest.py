"""Shared fixtures: the repo's params, a small demo configuration and a generated dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meterid.runtime import TELEMETRY_OFF

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


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API and database for the whole session (started once: ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
