"""dvc.yaml is generated from meterid/pipeline.py, each stage's code dependencies are what its
step module really imports, and what a flow runs is recorded in dvc.lock."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meterid.pipeline import (
    STAGES,
    code_dependencies,
    dvc_yaml,
    record_in_dvc,
    stage_names,
)
from meterid.tracking import dvc_data_version, photos_version, tracking_file
from tests.conftest import REPO_ROOT


def test_the_committed_dvc_yaml_is_the_generated_one():
    assert (REPO_ROOT / "dvc.yaml").read_text() == dvc_yaml(), (
        "dvc.yaml differs from meterid/pipeline.py: run `python -m meterid.pipeline > dvc.yaml`")


def test_code_dependencies_follow_the_imports_to_the_end():
    train = code_dependencies("meterid.training.steps")
    # what the hand-written list once missed: the quality gate and the engines the cache uses
    assert {"meterid/training", "meterid/inference/quality.py",
            "meterid/inference/engines.py"} <= set(train)
    assert "meterid/evaluation" not in train and "meterid/clustering" not in " ".join(train)
    evaluate = code_dependencies("meterid.evaluation.steps")
    assert {"meterid/evaluation", "meterid/registry.py", "meterid/training",
            "meterid/decision"} <= set(evaluate)


def test_every_stage_runs_its_own_command_on_templated_paths():
    stages = yaml.safe_load(dvc_yaml())["stages"]
    assert list(stages) == [stage.name for stage in STAGES]
    for name, stage in stages.items():
        assert stage["cmd"] == f"meterid {name}"
        data = [d for d in stage["deps"] if not d.startswith("meterid/")]
        assert data and all(d.startswith("${paths.") for d in data)


def test_a_flow_names_only_stages_that_exist():
    assert stage_names("train", "evaluate") == ("train", "evaluate")
    with pytest.raises(KeyError, match="no stage \\['trian'\\]"):
        stage_names("trian")


def test_what_a_flow_ran_is_recorded_in_dvc_lock(tmp_path: Path, caplog,
                                                  monkeypatch: pytest.MonkeyPatch):
    """A stage run outside `dvc repro` and photos added to a tracked folder are recorded as
    `dvc commit` records them: the stage in dvc.lock, the new photos in their .dvc file."""
    from dvc.repo import Repo

    assert record_in_dvc(tmp_path, ["split"]) == []
    assert "is not a DVC project" in caplog.text
    Repo.init(str(tmp_path), no_scm=True).close()
    (tmp_path / "data/raw/a").mkdir(parents=True)
    (tmp_path / "data/raw/a/1.jpg").write_bytes(b"one")
    with monkeypatch.context() as here:
        here.chdir(tmp_path)
        with Repo(str(tmp_path)) as repo:
            repo.add("data/raw")  # as `meterid init` tracks a user's photos
    photos = tracking_file(tmp_path, Path("data/raw"))
    # a DVC project without the pipeline: the photos are recorded, the stage is named as not
    assert record_in_dvc(tmp_path, [photos, "split"]) == [photos]
    assert "has no dvc.yaml" in caplog.text and "stages split not recorded" in caplog.text
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"split": {
        "cmd": "meterid split", "deps": ["data/raw"], "outs": ["data/splits.csv"]}}}))
    (tmp_path / "data/splits.csv").write_text("path,label,split\n")
    (tmp_path / "data/raw/a/2.jpg").write_bytes(b"two")  # a photo added since `dvc add`

    assert photos == "data/raw.dvc" and tracking_file(tmp_path, Path("data")) is None
    # training tags its run with that file's hash (a `meterid init` project has no data.dvc)
    version = photos_version(tmp_path, Path("data/raw"))
    assert version and version == dvc_data_version(tmp_path / photos) and version.endswith(".dir")
    assert photos_version(tmp_path, Path("data")) is None
    assert record_in_dvc(tmp_path, [photos, "split"]) == [photos, "split"]
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["split"]
    assert [out["path"] for out in lock["outs"]] == ["data/splits.csv"]
    tracked = yaml.safe_load((tmp_path / "data/raw.dvc").read_text())["outs"][0]
    assert tracked["nfiles"] == 2 and lock["deps"][0]["md5"] == tracked["md5"]
