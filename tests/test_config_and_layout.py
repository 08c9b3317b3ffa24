"""params.yaml parsing, flow overrides, and the library/orchestration boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meterid.config import ConfigError, Params, load_params
from tests.conftest import REPO_ROOT


def test_missing_params_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no such parameters file"):
        load_params(tmp_path / "params.yaml")


def test_misspelt_key_is_named(tmp_path: Path):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["split"]["hihg"] = raw["split"].pop("high")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="hihg"):
        load_params(tmp_path / "params.yaml")


def test_a_project_params_file_from_before_single_group_keeps_hdbscan_alone(tmp_path: Path):
    # `meterid init` copied params.yaml into users' projects before the key existed
    values = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert values["cluster"].pop("single_group") is True  # today's default
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    assert load_params(tmp_path / "params.yaml").cluster.single_group is False


def test_a_project_params_file_from_before_eval_image_size_reads_photos_at_the_training_size(
        tmp_path: Path):
    values = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert values["train"].pop("eval_image_size") == 352  # today's default
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    train = load_params(tmp_path / "params.yaml").train
    assert train.eval_image_size is None and train.photo_size == train.image_size == 288


def test_flow_overrides_change_only_what_is_given(params: Params):
    from meterid.flows.training import with_overrides

    changed = with_overrides(params, "resnet18", 2, None, True)
    assert changed.train.backbone == "resnet18" and changed.train.phase1.epochs == 2
    assert changed.train.phase2 == params.train.phase2
    assert changed.register_.auto_promote is True
    assert with_overrides(params, None, None, None, None) == params


def test_the_library_imports_no_orchestration():
    code = ("import sys, meterid.cli, meterid.data.steps, meterid.training.steps, "
            "meterid.scoring.steps, meterid.clustering.steps, meterid.clustering.candidates; "
            "print(sorted(m for m in ('prefect', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_help_of_every_command():
    from typer.testing import CliRunner

    from meterid.cli import app

    runner = CliRunner()
    for command in (["--help"], ["data", "demo", "--help"], ["validate", "--help"],
                    ["split", "--help"], ["train", "--help"], ["evaluate", "--help"],
                    ["models", "--help"], ["promote", "--help"], ["flow", "train", "--help"],
                    ["predict", "--help"], ["score", "--help"], ["embed", "--help"],
                    ["cluster", "--help"], ["candidates", "add", "--help"],
                    ["candidates", "export", "--help"], ["candidates", "reject", "--help"],
                    ["flow", "score", "--help"], ["flow", "score-demo", "--help"],
                    ["flow", "cluster", "--help"], ["flow", "demo", "--help"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output
