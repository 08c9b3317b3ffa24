"""`dvc repro` of the whole dvc.yaml (validate, split, train, evaluate) on a tiny generated
dataset, offline; then `dvc metrics show`, and a second repro that has nothing to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meterid.config import Params
from tests.conftest import REPO_ROOT, tiny_training, write_params

pytestmark = pytest.mark.slow


def _dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow/mlflow.db"}
    done = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_dvc_repro_runs_every_stage(tmp_path: Path, params: Params, small_demo: Path):
    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path)
    shutil.copytree(REPO_ROOT / "meterid", tmp_path / "meterid")  # stage deps hash the code
    write_params(tmp_path, tiny_training(params))
    shutil.copytree(small_demo / "raw", tmp_path / "data" / "raw")
    shutil.copytree(small_demo / "unknown", tmp_path / "data" / "unknown")
    (tmp_path / "mlflow").mkdir()
    _dvc(tmp_path, "init", "--no-scm", "--quiet")
    _dvc(tmp_path, "config", "core.analytics", "false")

    _dvc(tmp_path, "repro")

    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"validate", "split", "train", "evaluate"}
    assert (tmp_path / "models" / "champion" / "MLmodel").is_file()
    assert "accuracy" in _dvc(tmp_path, "metrics", "show")
    assert "up to date" in _dvc(tmp_path, "status")
    assert "didn't change" in _dvc(tmp_path, "repro")
