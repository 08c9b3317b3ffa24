"""dvc.yaml is generated from meterid/pipeline.py, and each stage's code dependencies are what
its step module really imports."""

from __future__ import annotations

import yaml

from meterid.pipeline import STAGES, code_dependencies, dvc_yaml
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
