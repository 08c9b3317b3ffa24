"""A user's own folder of class folders, from `meterid init` to a champion, with the real DVC,
Great Expectations, Prefect and MLflow; and an empty project that must not draw the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterid.cli import app
from meterid.config import load_params
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


def _meterid(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meterid.cli", *args], cwd=folder,
                          capture_output=True, text=True, timeout=600, check=False)


def test_init_from_a_folder_of_class_folders_trains_a_champion(
        tmp_path: Path, small_demo: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch):
    from flows.training import training

    project = tmp_path / "my-meters"
    made = CliRunner().invoke(app, ["init", str(project), "--photos", str(small_demo / "raw")])
    assert made.exit_code == 0, made.output
    classes = sorted(p.name for p in (small_demo / "raw").iterdir())
    assert f"{len(classes)} classes" in made.output
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == classes
    assert (project / "data/raw.dvc").is_file() and (project / ".dvc/config").is_file()
    params = load_params(project / "params.yaml")
    assert not params.demo.generate_if_empty
    assert "# meterid: every tunable in one place" in (project / "params.yaml").read_text()

    validated = _meterid(project, "validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr

    # The user's params with training cut to seconds; the stores stay the project's own.
    write_params(project, tiny_training(params))
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome = training(params_file="params.yaml")
    assert outcome["version"] == 1 and "champion" in outcome["aliases"]
    assert (project / "models/champion").is_dir() and (project / "mlflow/mlflow.db").is_file()
    metrics = json.loads((project / "reports/evaluation/metrics.json").read_text())
    assert metrics["test_images"] > 0 and metrics["unknown_flagged_share"] is None  # no held-out

    again = CliRunner().invoke(app, ["init", str(project)])
    assert again.exit_code == 2 and "already has a params.yaml" in again.output


def test_an_empty_project_fails_naming_the_folder_and_never_draws_the_demo(tmp_path: Path):
    project = tmp_path / "empty"
    assert CliRunner().invoke(app, ["init", str(project)]).exit_code == 0
    assert "one folder per meter type" in (project / "data/README.txt").read_text()
    result = _meterid(project, "flow", "data")
    assert result.returncode != 0
    assert "failed validation rules: has_images" in result.stdout + result.stderr
    assert not any((project / "data/raw").iterdir())
