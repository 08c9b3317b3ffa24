"""`meterid review`: the queue in words (an audit looks like any other photo), labels by a
sha256 prefix with the reviewer's name, conflicts, the field audit's verdict."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from meterid.cli import app
from meterid.config import Params, load_params
from meterid.core import OK, UNKNOWN, ScoredRow
from meterid.review.queue import review_queue
from meterid.review.store import open_store
from tests.conftest import write_params
from tests.integration.production import register_versions


def _queued_project(project_dir: Path, params: Params) -> Params:
    write_params(project_dir, params)
    for name in ("a", "b"):
        (project_dir / "data/raw" / name).mkdir(parents=True)
    project = load_params(project_dir / "params.yaml")
    rows = [ScoredRow(0, "http://x/new.jpg", OK, label=UNKNOWN, auto_accepted=False,
                      top1_label="a", sha256="ab" * 32, model_version=2),
            ScoredRow(1, "http://x/ok.jpg", OK, label="a", auto_accepted=True,
                      prediction_set=["a"], sha256="cd" * 32, model_version=2)]
    table = pd.DataFrame([row.to_dict() for row in rows])
    open_store(project).enqueue("run-1", review_queue(table, "run-1", 0.0, 1))
    return project


def test_review_commands_list_label_and_show_conflicts(project_dir: Path, params: Params):
    _queued_project(project_dir, params)
    runner = CliRunner()
    listed = runner.invoke(app, ["review", "queue"])
    assert listed.exit_code == 0, listed.output
    assert "abababababab  http://x/new.jpg  new type?" in listed.output
    assert "cdcdcdcdcdcd  http://x/ok.jpg  a? candidates: a" in listed.output
    assert "audit" not in listed.output  # a reviewer cannot tell an audit photo

    labelled = runner.invoke(app, ["review", "label", "abab", "new type", "--reviewer", "ana"])
    assert labelled.exit_code == 0 and "new type (ana)" in labelled.output
    mine = runner.invoke(app, ["review", "queue", "--reviewer", "ana"])
    assert "http://x/new.jpg" not in mine.output and "http://x/ok.jpg" in mine.output
    other = runner.invoke(app, ["review", "label", "abab", "b", "--reviewer", "ben"])
    assert "conflict with {'ana': 'new type'}" in other.output
    conflicts = runner.invoke(app, ["review", "conflicts"])
    assert "abababababab  ana: new type, ben: b" in conflicts.output

    wrong = runner.invoke(app, ["review", "label", "abab", "z", "--reviewer", "ana"])
    assert wrong.exit_code == 2 and "neither a class of the model (a, b)" in wrong.output
    missing = runner.invoke(app, ["review", "label", "ff", "a", "--reviewer", "ana"])
    assert missing.exit_code == 2 and "no queued photo starts with 'ff'" in missing.output

    runner.invoke(app, ["review", "label", "cdcd", "a", "--reviewer", "ana"])
    audit = runner.invoke(app, ["review", "audit", "2"])
    assert "1 field audits, 0 wrong" in audit.output


def test_the_audit_of_a_version_that_certified_nothing_says_auto_accept_is_off(
        project_dir: Path, params: Params, tiny_model):
    write_params(project_dir, params)
    [version] = register_versions(tiny_model, 1, {"accuracy": 0.97, "auto_accept_certified": 0.0,
                                                  "auto_accept_certifiable_error": 0.032,
                                                  "auto_accept_target_error": 0.02})
    audit = CliRunner().invoke(app, ["review", "audit", str(version)])
    assert audit.exit_code == 0, audit.output
    assert f"Auto-accept off for version {version}" in audit.output
    assert "3.2% at best, above the 2.0% target" in audit.output
    assert "validation certificate stands" not in audit.output
