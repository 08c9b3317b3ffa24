"""Batch scoring scaled out on Dask: shard planning, shards into checkpoint parts, the same rows
as one process, an UNKNOWN store shared by processes, a remote worker finding the MLflow store,
and a killed sharded run resumed without rescoring its finished shards."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch

from meterid.config import FetchConfig, Params, load_params
from meterid.core import OK, ScoredRow
from meterid.scoring.checkpoint import PART_GLOB
from meterid.scoring.shards import (
    ScaleOut,
    ScaleOutError,
    parse_scale_out,
    plan_run,
    plan_shards,
    score_shard,
    shard_predictor,
)
from meterid.scoring.store import UnknownStore
from tests.conftest import write_params
from tests.scoring.conftest import Routes

URLS = [f"u{i}" for i in range(10)]


# --- planning, without a model or Prefect ------------------------------------------------------

def test_shards_cover_every_row_once_in_input_order():
    shards = plan_shards(URLS, frozenset(), 4)
    assert [(shard.start, shard.stop) for shard in shards] == [(0, 4), (4, 8), (8, 10)]
    assert [pair for shard in shards for pair in shard.todo] == list(enumerate(URLS))
    names = [shard.part_name for shard in shards]
    assert names == sorted(names) and len(set(names)) == 3
    assert all(Path(name).match(PART_GLOB) for name in names)  # assemble() reads them


def test_done_rows_are_left_out_and_a_finished_shard_is_not_planned():
    shards = plan_shards(URLS, frozenset({0, 1, 2, 3, 5}), 4)
    assert [(shard.start, [row for row, _ in shard.todo]) for shard in shards] == [
        (4, [4, 6, 7]), (8, [8, 9])]
    # a shard keeps its full plan's name whatever is done: its part is found on a resume
    assert shards[0].part_name == plan_shards(URLS, frozenset(), 4)[1].part_name


def test_empty_lists_and_bad_sizes():
    assert plan_shards([], frozenset(), 256) == []
    assert plan_shards(URLS, frozenset(range(10)), 3) == []
    with pytest.raises(ValueError, match="shard_rows must be at least 1"):
        plan_shards(URLS, frozenset(), 0)


@pytest.mark.parametrize("value, expected", [
    ("threads", ScaleOut()),
    ("dask", ScaleOut(workers=3)),
    ("dask:2", ScaleOut(workers=2)),
    (" dask:12 ", ScaleOut(workers=12)),
    ("tcp://127.0.0.1:8786", ScaleOut(address="tcp://127.0.0.1:8786")),
    ("tcp://scheduler.internal:8786", ScaleOut(address="tcp://scheduler.internal:8786")),
])
def test_scale_out_forms(value: str, expected: ScaleOut):
    assert parse_scale_out(value, default_workers=3) == expected
    assert parse_scale_out(value, 3).sharded == (value != "threads")


@pytest.mark.parametrize("value", ["", "dask:0", "dask:two", "Dask", "processes", "tcp://host",
                                   "http://127.0.0.1:8786", "dask:2 threads"])
def test_a_bad_scale_out_names_the_value_and_the_accepted_forms(value: str):
    with pytest.raises(ScaleOutError) as error:
        parse_scale_out(value, 2)
    message = str(error.value)
    assert repr(value) in message
    assert all(form in message for form in ('"threads"', '"dask"', '"dask:N"', "tcp://host:8786"))


def test_the_shard_logic_imports_no_orchestration():
    code = ("import sys, meterid.scoring.shards; "
            "print(sorted(m for m in ('prefect', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_bad_scale_out_stops_the_cli_and_the_flow_before_any_work(project_dir: Path,
                                                                     params: Params):
    from typer.testing import CliRunner

    from meterid.cli import app
    from meterid.flows.batch_scoring import batch_scoring

    write_params(project_dir, params)
    result = CliRunner().invoke(app, ["flow", "score", "--input", "x.txt", "--scale-out",
                                      "dask:0"])
    assert result.exit_code == 2 and "invalid scale-out 'dask:0': use" in result.stderr
    with pytest.raises(ScaleOutError, match="invalid scale-out 'proccesses'"):
        batch_scoring.fn(input="x.txt", scale_out="proccesses")


# --- the UNKNOWN store shared by processes -----------------------------------------------------

def _add_urls(root: str, name: str, count: int, start: multiprocessing.synchronize.Barrier) -> None:
    store = UnknownStore(Path(root))
    start.wait(timeout=60)
    for i in range(count):
        store.add(b"the same photo", ScoredRow(i, f"http://127.0.0.1/{name}/{i}.jpg", OK,
                                               sha256="ab" * 32, image_format="JPEG",
                                               scored_at="2026-12-01T00:00:00+00:00"))


def test_two_processes_adding_one_photo_keep_every_url(tmp_path: Path):
    context = multiprocessing.get_context("fork")  # the child needs only the store
    start = context.Barrier(2)
    count = 10  # 2 x 10 URLs: within the record's MAX_URLS, so none may be missing
    workers = [context.Process(target=_add_urls, args=(str(tmp_path), name, count, start))
               for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    records = UnknownStore(tmp_path).records()
    assert len(records) == 1 and Path(records.iloc[0]["path"]).read_bytes() == b"the same photo"
    assert sorted(records.iloc[0]["urls"]) == sorted(
        f"http://127.0.0.1/{name}/{i}.jpg" for name in ("a", "b") for i in range(count))


# --- shards scored by the library, and the flow on Dask ----------------------------------------

@pytest.fixture
def project(project_dir: Path, params: Params, patient_fetch: FetchConfig,
            exported_model: Path) -> Path:
    """Scoring with the exported tiny model, in shards of 3 rows, with its own MLflow store."""
    score = params.score.model_copy(update=dict(
        model=str(exported_model), checkpoint_rows=2, shard_rows=3, batch_size=4, concurrency=2,
        fetch=patient_fetch))
    write_params(project_dir, params.model_copy(update={"score": score}))
    return project_dir


def _mixed_list(server: str) -> list[str]:
    """Good photos (one under two URLs, one too dark), failures with a reason, an empty row."""
    routes = ["/ok.jpg", "/nothing-here.jpg", "/cmyk.jpg", "/500", "/grey16.png", "/palette.png",
              "/rgba.png", "/html", "/zero.jpg", "/rotated.jpg", "/ok-copy.jpg", "/dark.jpg",
              "/truncated.jpg", "/bomb.png", "/loop-a", "/hop"]
    return [server + route for route in routes] + [""]


@pytest.mark.slow
def test_either_path_resumes_the_others_parts(project: Path, hostile_server: str, one_thread):
    """A single-process run killed after 4 rows, resumed in shards; then a sharded run stopped
    after one shard, resumed by one process: every row once, nothing scored twice."""
    from meterid.inference.quality import gate_limits
    from meterid.scoring.steps import (
        _score_into,
        field_audit,
        finish_run,
        load_predictor,
        open_run,
        open_scorer,
        score_list,
    )

    params = load_params(project / "params.yaml")
    urls = _mixed_list(hostile_server)[:7]
    (project / "list.txt").write_text("\n".join(urls) + "\n")
    predictor = load_predictor(params, params.score.model, None)
    run = open_run(params, params.score, predictor.bundle.source, predictor.policy,
                   project / "list.txt",
                   quality=gate_limits(predictor.bundle.quality_limits, params.score.quality),
                   audit=field_audit(params, predictor.version))
    with open_scorer(predictor, params.score, params.validate_.max_pixels, None,
                     run.run_id, None) as scorer:  # the single-process run, "killed" after 4 rows
        _score_into(run.checkpoint, scorer, iter(list(run.todo())[:4]), run.run_id, 2, 7, 0)

    planned = plan_run(params, params.score, None, project / "list.txt", None, None, project)
    assert planned.run.run_id == run.run_id  # the same run, found by its key
    assert [[row for row, _ in shard.todo] for shard in planned.shards] == [[4, 5], [6]]
    results = [score_shard(planned.job, shard, threads=1) for shard in planned.shards]
    assert [result.scored for result in results] == [2, 1]
    assert score_shard(planned.job, planned.shards[0]).scored == 0  # its part is there: skipped
    engine = shard_predictor(planned.job, threads=2).engine  # a 2-thread worker's, pinned
    assert torch.get_num_threads() == 2 and engine.name == "onnxruntime"
    assert engine.session.get_session_options().intra_op_num_threads == 2
    outcome = finish_run(planned.run, params, params.score, sum(r.scored for r in results))
    assert outcome.summary["rows"] == 7 and not planned.run.checkpoint.work_dir.exists()

    planned = plan_run(params, params.score, None, project / "list.txt", None, None, project)
    score_shard(planned.job, planned.shards[1])  # a sharded run "killed" after one shard
    resumed = score_list(params, params.score, predictor, project / "list.txt")
    assert resumed.rescored_rows == 7 - 3 and resumed.run_id == planned.run.run_id
    out = pd.read_parquet(resumed.output)
    assert list(out["row"]) == list(range(7)) and out["url"].tolist() == urls


def _same_rows(single: pd.DataFrame, sharded: pd.DataFrame) -> None:
    assert list(sharded.columns) == list(single.columns)
    assert dict(sharded.dtypes) == dict(single.dtypes)
    assert list(sharded["row"]) == list(range(len(single)))
    for column in single.columns.drop(["scored_at", "run_id"]):
        if pd.api.types.is_float_dtype(single[column]):
            assert np.allclose(single[column], sharded[column], atol=1e-5, equal_nan=True), column
        else:
            errors = list(zip(single["error"], sharded["error"], strict=True))
            assert _plain(single[column]) == _plain(sharded[column]), (column, errors)


def _plain(values: pd.Series) -> list:
    """Comparable values: list columns (prediction_set) as lists, missing as "-"."""
    return [list(v) if isinstance(v, np.ndarray | list) else ("-" if pd.isna(v) else v)
            for v in values]


@pytest.mark.slow
def test_two_dask_workers_give_the_single_process_rows(project: Path, hostile_server: str,
                                                       prefect_harness):
    from meterid.flows.batch_scoring import batch_scoring

    urls = _mixed_list(hostile_server)
    (project / "list.txt").write_text("\n".join(urls) + "\n")
    single = batch_scoring(input="list.txt", output="single.parquet", threshold=0.99)
    sharded = batch_scoring(input="list.txt", output="dask.parquet", threshold=0.99,
                            scale_out="dask:2")
    first, second = pd.read_parquet(single["output"]), pd.read_parquet(sharded["output"])
    _same_rows(first, second)
    assert {"ok", "error"} == set(second["status"]) and second["run_id"].nunique() == 1
    assert second["error"].str.startswith("HTTP 404").sum() == 1
    confidence = pytest.approx(single["summary"]["mean_top1_conf"], abs=1e-5)
    assert sharded["summary"] == {**single["summary"], "mean_top1_conf": confidence}
    # one photo under three URLs (one a redirect), scored in three shards: stored once
    records = UnknownStore(project / "data/unknown_store").records()
    ok = records[records["sha256"] == second.loc[0, "sha256"]]
    assert len(ok) == 1 and sorted(ok.iloc[0]["urls"]) == sorted([urls[0], urls[10], urls[15]])


@pytest.mark.slow
def test_a_remote_worker_finds_the_mlflow_store_from_params(
        project: Path, params: Params, exported_model: Path, hostile_server: str,
        prefect_harness, monkeypatch: pytest.MonkeyPatch, tmp_path_factory):
    """A scheduler and a worker started apart (``tcp://`` form), the worker with no MLflow
    setting and another working folder: the shard task configures the stores from params.yaml
    and loads ``models:/meterid/1`` from the registry there."""
    from meterid.flows.batch_scoring import batch_scoring

    registry_db = exported_model.parent / "mlflow.db"  # where the tiny model is registered
    stores = params.stores.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{registry_db}"})
    score = load_params(project / "params.yaml").score.model_copy(update={
        "model": "models:/meterid/1"})
    write_params(project, params.model_copy(update={"stores": stores, "score": score}))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (project / "list.txt").write_text(f"{hostile_server}/ok.jpg\n{hostile_server}/500\n")
    elsewhere = tmp_path_factory.mktemp("worker-cwd")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_API"))}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler_file = elsewhere / "scheduler.json"
    processes = [subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0",
                                   "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                  cwd=elsewhere, env=env, stderr=subprocess.DEVNULL)]
    try:
        address = _scheduler_address(scheduler_file)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard"],
            cwd=elsewhere, env=env, stderr=subprocess.DEVNULL))
        result = batch_scoring(input="list.txt", scale_out=address)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)
    out = pd.read_parquet(result["output"])
    assert list(out["status"]) == ["ok", "error"] and list(out["model_version"]) == [1, 1]
    assert result["model"] == "models:/meterid/1"


def _scheduler_address(scheduler_file: Path) -> str:
    import json

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if scheduler_file.is_file():
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (ValueError, KeyError):
                pass  # being written
        time.sleep(0.1)
    raise AssertionError("the Dask scheduler did not start within 60 s")


# --- kill -9 of a sharded run, resumed --------------------------------------------------------

def _shard_parts(project: Path) -> list[Path]:
    return list((project / "reports/scoring/.work").glob("*/part-rows-*.parquet"))


def _wait_until_gone(group: int, timeout_s: float = 60) -> None:
    """Every process of the killed group dead (or a zombie): none can write a part any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for process in psutil.process_iter(["status"]):
            try:
                if (os.getpgid(process.pid) == group
                        and process.info["status"] != psutil.STATUS_ZOMBIE):
                    alive.append(process.pid)
            except (ProcessLookupError, psutil.Error):
                continue
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes {alive} of the killed run still alive after {timeout_s} s")


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_without_rescoring_finished_shards(
        project: Path, params: Params, hostile_server: str):
    n = 96  # 12 shards of 8 slow photos (>= 0.8 s each): room to kill between shards
    score = load_params(project / "params.yaml").score.model_copy(update={"shard_rows": 8})
    write_params(project, params.model_copy(update={"score": score}))
    urls = [f"{hostile_server}/slow-ok/{i}.jpg" for i in range(n)]
    (project / "list.txt").write_text("\n".join(urls) + "\n")
    command = [sys.executable, "-m", "meterid.cli", "flow", "score", "--input", "list.txt",
               "--output", "out.parquet", "--scale-out", "dask:2"]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # as a user runs it
    Routes.hits.clear()
    first = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not _shard_parts(project) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the flow, its Dask workers and its Prefect server
    first.wait(timeout=30)
    _wait_until_gone(first.pid)
    finished = {row for part in _shard_parts(project)
                for row in pd.read_parquet(part, columns=["row"])["row"]}
    assert 0 < len(finished) < n, "the run should be killed half-way"
    hits_before = dict(Routes.hits)

    second = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                            timeout=400)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(finished)} already scored" in second.stderr
    out = pd.read_parquet(project / "out.parquet")
    assert list(out["row"]) == list(range(n)) and (out["status"] == "ok").all()
    assert out["url"].tolist() == urls and out["run_id"].nunique() == 1  # one run, resumed
    fetched = {i for i, url in enumerate(urls) if Routes.hits.get(url[len(hostile_server):], 0)
               > hits_before.get(url[len(hostile_server):], 0)}
    assert fetched == set(range(n)) - finished  # finished shards not rescored, the rest once
    # the Dask workers reported to the flow's temporary Prefect server, not to one each
    assert second.stderr.count("Starting temporary server") == 1
