"""`meterid flow demo` (what `make demo` runs), as a newcomer runs it: in a fresh project folder,
ephemeral Prefect, the demo drawn because the image folder is empty."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from meterid.config import DemoConfig, Params
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


def test_the_demo_command_trains_scores_and_clusters_on_one_prefect_server(
        tmp_path: Path, params: Params, small_demo_cfg: DemoConfig):
    write_params(tmp_path, tiny_training(params), small_demo_cfg)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}  # the project's own stores
    run = subprocess.run([sys.executable, "-m", "meterid.cli", "flow", "demo"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert log.count("Starting temporary server") == 1, log[-4000:]
    assert (tmp_path / "models/champion").is_dir()

    listed = pd.read_csv(tmp_path / "reports/scoring/demo-list.csv")
    scored = pd.read_parquet(tmp_path / "reports/scoring/demo.parquet")
    assert len(scored) == len(listed) > 0  # every listed URL comes out, scored or with its error
    assert set(scored["status"]) <= {"ok", "error"} and (scored["status"] == "error").any()
    assert "UNKNOWN" in set(scored["label"])  # the held-out brands, kept for the clustering
    assert any((tmp_path / "reports/clusters").glob("*/summary.csv"))
