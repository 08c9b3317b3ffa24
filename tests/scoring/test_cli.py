"""``meterid predict`` and ``meterid score`` end to end, and a killed run resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from meterid.cli import app
from meterid.config import FetchConfig, Params
from meterid.stores import TrackingStoreError
from tests.conftest import write_params
from tests.scoring.conftest import Routes

pytestmark = pytest.mark.slow


@pytest.fixture
def project(project_dir: Path, params: Params,
            patient_fetch: FetchConfig, exported_model: Path) -> Path:
    """A project folder scoring with the exported tiny model, small checkpoints, own MLflow."""
    score = params.score.model_copy(update=dict(
        model=str(exported_model), checkpoint_rows=4, batch_size=4, concurrency=2,
        fetch=patient_fetch, write_csv=True))
    write_params(project_dir, params.model_copy(update={"score": score}))
    return project_dir


def test_predict_prints_one_json_line_per_input_and_fails_on_errors(project, hostile_server):
    result = CliRunner().invoke(app, ["predict", f"{hostile_server}/ok.jpg",
                                      f"{hostile_server}/missing.jpg", "--json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["status"] for line in lines] == ["ok", "error"]
    ok, bad = lines
    assert ok["input"].endswith("/ok.jpg") and ok["model_version"] == 1
    assert ok["label"] in {"alpha", "beta", "gamma", "UNKNOWN"} and ok["top3_label"]
    assert bad["error"].startswith("HTTP 404") and bad["label"] is None
    assert {"input", "status", "error", "label", "is_unknown", "top1_label", "top1_conf",
            "top2_label", "top2_conf", "top3_label", "top3_conf", "open_set_score",
            "auto_accepted", "prediction_set", "model_version"} <= set(ok)


def test_predict_with_a_missing_model_says_how_to_work_offline(project):
    result = CliRunner().invoke(app, ["predict", "x.jpg", "--model", "champion"])
    assert result.exit_code == 2 and "--model models/champion" in result.stderr
    assert "'models:/meterid@champion'" in result.stderr  # a bare alias means meterid's alias


def test_score_writes_every_row_in_order_and_records_the_run(project, hostile_server):
    urls = [f"{hostile_server}/ok.jpg", f"{hostile_server}/nope.jpg", "",
            f"{hostile_server}/dark.jpg", f"{hostile_server}/ok.jpg"]
    pd.DataFrame({"url": urls, "meter_id": ["m1", "m2", "m3", "m4", "m5"]}).to_excel(
        project / "night.xlsx", index=False)
    result = CliRunner().invoke(app, ["score", "--input", "night.xlsx", "--output", "out.parquet",
                                      "--threshold", "0.99"])
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(project / "out.parquet")
    assert list(out["row"]) == [0, 1, 2, 3, 4] and list(out["meter_id"]) == ["m1", "m2", "m3",
                                                                           "m4", "m5"]
    assert list(out["status"]) == ["ok", "error", "error", "ok", "ok"]
    assert list(out["label"].fillna("-")) == ["UNKNOWN", "-", "-", "POOR_QUALITY", "UNKNOWN"]
    assert out["run_id"].nunique() == 1 and out["scored_at"].notna().all()
    # nothing auto-accepted: this model's stored policy certified nothing; the reviewer's
    # candidates are every label (an untested model promises no smaller set)
    assert not out["auto_accepted"].fillna(False).any()
    candidates = list(out.loc[0, "prediction_set"])
    assert set(candidates) == {"alpha", "beta", "gamma"}
    assert candidates[0] == out.loc[0, "top1_label"]  # most probable first
    csv = pd.read_csv(project / "out.csv")
    assert csv.loc[0, "prediction_set"].count(" | ") == len(out.loc[0, "prediction_set"]) - 1
    assert not any((project / "reports/scoring/.work").iterdir())  # work folder cleaned
    stored = list((project / "data/unknown_store/records").rglob("*.json"))
    assert len(stored) == 1  # two UNKNOWN rows, one photo; the dark one is not kept
    runs = mlflow.search_runs(experiment_names=["meterid-scoring"], output_format="list")
    assert len(runs) == 1 and runs[0].data.metrics["unknown_share"] == pytest.approx(2 / 3)


def test_score_on_a_store_that_cannot_log_the_run_refuses_before_scoring(
        project, hostile_server):
    # a project run through `meterid serve` has its experiments' artifacts on the server; the
    # SQLite file alone cannot log a run there (MLflow said so only after the whole batch)
    mlflow.MlflowClient().create_experiment("meterid-scoring",
                                            artifact_location="mlflow-artifacts:/2")
    (project / "night.csv").write_text(f"url\n{hostile_server}/ok.jpg\n")
    result = CliRunner().invoke(app, ["score", "--input", "night.csv", "--output", "out.parquet"])
    assert isinstance(result.exception, TrackingStoreError)  # `main` prints it (test below)
    assert str(result.exception).startswith("the experiment 'meterid-scoring' keeps its "
                                            "artifacts on the MLflow server (mlflow-artifacts:/2)")
    assert "start `meterid serve`" in str(result.exception)
    assert not (project / "out.parquet").exists() and not _parts(project)


def test_any_command_names_a_store_that_cannot_log_it_without_a_traceback(
        project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    from meterid.cli import main

    mlflow.MlflowClient().create_experiment("meterid-training",
                                            artifact_location="mlflow-artifacts:/1")
    monkeypatch.setattr("sys.argv", ["meterid", "train"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert ("\nerror: the experiment 'meterid-training' keeps its artifacts on the MLflow "
            "server") in err and "Traceback" not in err


def _parts(project: Path) -> list[Path]:
    return list((project / "reports/scoring/.work").glob("*/part-*.parquet"))


def test_a_killed_run_resumes_without_rescoring_or_losing_rows(project, hostile_server):
    n = 80  # >= 8 s of slow photos: room to see two checkpoints before the run ends
    urls = [f"{hostile_server}/slow-ok/{i}.jpg" for i in range(n)]
    (project / "list.txt").write_text("\n".join(urls) + "\n")
    command = [sys.executable, "-m", "meterid.cli", "score", "--input", "list.txt",
               "--output", "out.parquet"]
    Routes.hits.clear()
    first = subprocess.Popen(command, cwd=project, env=os.environ.copy(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_parts(project)) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    done_before = sum(len(pd.read_parquet(p)) for p in _parts(project))
    assert 0 < done_before < n, "the run should be killed half-way"
    hits_before = sum(Routes.hits.values())

    second = subprocess.run(command, cwd=project, env=os.environ.copy(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming run" in second.stderr and f"{done_before} of {n} rows" in second.stderr
    out = pd.read_parquet(project / "out.parquet")
    assert list(out["row"]) == list(range(n)) and (out["status"] == "ok").all()
    assert out["run_id"].nunique() == 1  # one run, resumed
    assert sum(Routes.hits.values()) - hits_before == n - done_before  # finished rows not refetched
