"""dvc.yaml's evaluate stage tracks exactly the files the catalog says evaluation writes, so a
renamed report cannot drift between the writer, the dashboard and the pipeline."""

from __future__ import annotations

from pathlib import Path

import yaml

from meterid.catalog import EvaluationReports
from tests.conftest import REPO_ROOT


def _listed(entries: list) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def test_dvc_tracks_every_evaluation_report_the_catalog_names():
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["evaluate"]
    listed = _listed(stage["outs"]) | _listed(stage["metrics"]) | _listed(stage["plots"])
    reports = EvaluationReports(Path("${paths.evaluation_reports}")).tracked()
    assert {path.as_posix() for path in reports.values()} <= listed
    in_folder = {p for p in listed if p.startswith("${paths.evaluation_reports}/")}
    assert in_folder == {path.as_posix() for path in reports.values()}
