"""Batch scoring scaled out on Dask vs one process, side by side on one list.

The same URLs (2,000 demo photos served by a separate process on 127.0.0.1, as in
``benchmarks/scoring.py``) go through the ``batch_scoring`` flow three ways: today's single
process (``scale_out="threads"``), one Dask worker process and two (1 thread each). Printed: the
img/s of each whole flow run (for Dask: the cluster's start and each worker's model load
included), the ratios, and a check that the three outputs hold the same rows.

Runs in a temporary project (its own MLflow store, reports, no UNKNOWN store), so the project's
scoring history and drift monitoring are untouched. Uses the exported champion
(``models/champion``) when there is one, else an untrained classifier of the same backbone
registered in the temporary store (the workers load it from there, as from production's
registry); the demo photos when there are enough, else a demo set generated for the run
(about 2 minutes on 2 cores). ``python -m benchmarks.scoring_dask 300`` scores a shorter list.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from benchmarks.scoring import N_URLS, load_model, photo_server, photos
from meterid.config import Params, load_params
from meterid.scoring.demo import url_for
from meterid.stores import TRACKING_ENV

MODES = ("threads", "dask:1", "dask:2")
VARYING = ["scored_at", "run_id"]  # differ between any two runs


@contextlib.contextmanager
def _own_mlflow(folder: Path) -> Iterator[str]:
    """A temporary MLflow store for this process and the Dask workers it starts."""
    previous = os.environ.get(TRACKING_ENV)
    os.environ[TRACKING_ENV] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        yield os.environ[TRACKING_ENV]
    finally:
        if previous is None:
            os.environ.pop(TRACKING_ENV)
        else:
            os.environ[TRACKING_ENV] = previous


def _model(params: Params, folder: Path) -> str:
    """The exported champion's folder, else an untrained classifier registered in ``folder``."""
    exported = params.paths.models_dir / "champion"
    if exported.is_dir():
        return str(exported.resolve())
    import mlflow

    from meterid import registry

    loaded = load_model(params)
    experiment = mlflow.create_experiment("benchmark-model", str(folder / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        info = registry.log_model(loaded)
    return f"models:/{registry.MODEL_NAME}/{registry.register(info.model_uri, run.info.run_id, {})}"


def _photos(params: Params, folder: Path) -> tuple[Path, list[Path]]:
    """The demo photos (their common root and N_URLS of them), generated into ``folder`` when
    the project has too few."""
    try:
        return photos(params)
    except SystemExit as missing:
        from meterid.data.demo.generate import generate_demo

        print(f"{missing}; generating a demo set for this run instead", flush=True)
        paths = params.paths.model_copy(update={"raw_dir": folder / "raw",
                                                "unknown_dir": folder / "unknown"})
        generate_demo(params.demo, paths.raw_dir, paths.unknown_dir)
        return photos(params.model_copy(update={"paths": paths}))


def _project(params: Params, folder: Path, model: str) -> Path:
    """A params.yaml scoring with ``model`` into ``folder``, keeping no UNKNOWN photos."""
    score = params.score.model_copy(update={"model": model, "store_unknown": False})
    paths = params.paths.model_copy(update={"scoring_reports": folder / "reports"})
    raw = params.model_copy(update={"score": score, "paths": paths}).model_dump(
        mode="json", by_alias=True)
    raw["stores"]["mlflow_artifact_root"] = str(folder / "artifacts")
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params_file


def _score(list_file: Path, params_file: Path, mode: str) -> tuple[pd.DataFrame, float, float]:
    """The output, the img/s of the whole flow run and those between the first and the last
    row scored (``scored_at``, to the second): what remains once workers are up."""
    from meterid.flows.batch_scoring import batch_scoring

    output = list_file.with_name(f"{mode.replace(':', '-')}.parquet")
    start = time.perf_counter()
    result = batch_scoring(input=str(list_file), output=str(output), scale_out=mode,
                           params_file=str(params_file))
    whole = result["summary"]["rows"] / (time.perf_counter() - start)
    table = pd.read_parquet(output)
    scored_at = pd.to_datetime(table["scored_at"])
    window = (scored_at.max() - scored_at.min()).total_seconds() + 1  # whole seconds
    return table, whole, len(table) / window


def run(n_urls: int = N_URLS) -> dict[str, float]:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")  # before the flows import Prefect
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="meterid-bench-dask-") as tmp, _own_mlflow(Path(tmp)):
        folder = Path(tmp)
        params = load_params()
        root, paths = _photos(params, folder)
        params_file = _project(params, folder, _model(params, folder))
        outputs = {}
        with photo_server(root) as server:
            base = server.base
            warm_up, list_file = folder / "warm-up.txt", folder / "urls.txt"
            warm_up.write_text("".join(f"{url_for(base, root, p)}\n" for p in paths[:8]))
            list_file.write_text("".join(f"{url_for(base, root, p)}\n" for p in paths[:n_urls]))
            _score(warm_up, params_file, "threads")  # Prefect's server and the ONNX export
            for mode in MODES:
                outputs[mode], rates[mode], rates[f"{mode} scoring"] = _score(
                    list_file, params_file, mode)
                print(f"{mode:8s}: {rates[mode]:6.1f} img/s over {n_urls} URLs, whole flow run; "
                      f"{rates[f'{mode} scoring']:6.1f} img/s from the first row scored to the "
                      "last", flush=True)
    single = outputs["threads"].drop(columns=VARYING)
    for mode in MODES[1:]:  # raises on any difference: rows, columns, types, values
        pd.testing.assert_frame_equal(single, outputs[mode].drop(columns=VARYING),
                                      check_exact=False, atol=1e-5)
    ok = int((single["status"] == "ok").sum())
    print(f"same rows from all three: {len(single)} rows ({ok} scored), labels and statuses "
          "equal, confidences within 1e-5")
    for suffix, what in (("", "whole flow runs"), (" scoring", "first to last row")):
        threads, one, two = (rates[f"{mode}{suffix}"] for mode in MODES)
        print(f"{what}: dask:1 / threads {one / threads:.2f}x, dask:2 / threads "
              f"{two / threads:.2f}x, dask:2 / dask:1 {two / one:.2f}x")
    return rates


if __name__ == "__main__":  # the Dask workers re-import this module: nothing runs then
    import logging

    from meterid.stores import configure_stores

    configure_stores(load_params().stores, Path.cwd(), check=False)  # as benchmarks/__main__
    logging.basicConfig(level=logging.WARNING)
    run(int(sys.argv[1]) if len(sys.argv) > 1 else N_URLS)
