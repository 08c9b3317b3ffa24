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
