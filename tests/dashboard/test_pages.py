"""The dashboard's pages on real outputs, driven by Streamlit's AppTest: the nightly results
(counts, filters, thumbnails, CSV), the data page after a real validation, the clusters page's
actions on the real dataset (add copies, re-validates and `dvc add`s; a reject sticks; a moved
status is refused), the model page's field figures from the label store, and its reason when
a version's reports cannot be read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from meterid.clustering.state import ClusterState
from meterid.config import Params, load_params
from meterid.dashboard import data
from meterid.dashboard.views.results import DECISION_COLOURS
from meterid.review.queue import review_queue
from meterid.review.store import NEW_TYPE, open_store
from tests.conftest import REPO_ROOT
from tests.dashboard.outputs import clustering_run, night
from tests.integration.production import register_versions

APP = REPO_ROOT / "meterid" / "dashboard" / "app.py"


@pytest.fixture
def project(project_dir: Path) -> Params:
    shutil.copy(REPO_ROOT / "params.yaml", project_dir / "params.yaml")
    return load_params(project_dir / "params.yaml")


def _app(page: str):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page(f"views/{page}.py").run()
    assert not app.exception, app.exception
    return app


def test_results_are_filtered_in_words_with_thumbnails(project: Params, project_dir: Path):
    night(project, project_dir)
    verdicts = {"b" * 64: "alpha", "c" * 64: "conflict"}
    everything = data.scoring_results(project, "night-1.parquet", verdicts, data.ResultsFilter())
    assert everything["decision"].tolist() == ["auto-accepted", "needs a person", "new type?",
                                               "error"]
    assert everything["reviewers"].tolist()[1:3] == ["alpha", "conflict"]
    assert everything["candidates"][1] == "beta | alpha"
    unsure = data.scoring_results(project, "night-1.parquet", verdicts, data.ResultsFilter(
        decisions=("needs a person", "new type?"), min_confidence=0.5))
    assert unsure["url"].tolist() == [str(project_dir / "field-1.png")]
    assert data.scoring_results(project, "night-1.parquet", verdicts, data.ResultsFilter(
        text="404"))["decision"].tolist() == ["error"]
    assert data.thumbnail(str(project_dir / "field-0.png")).startswith("data:image/png;base64,")
    assert data.thumbnail("http://127.0.0.1:9/x.jpg") == "http://127.0.0.1:9/x.jpg"
    assert data.thumbnail(str(project_dir / "missing.png")) is None


def test_the_results_page_counts_each_run_and_downloads_the_filtered_rows(
        project: Params, project_dir: Path):
    table = night(project, project_dir)
    store = open_store(project)
    store.enqueue("night-1", review_queue(table, "night-1", 0.0, 0))
    for name in ("alpha", "beta"):
        (project.paths.raw_dir / name).mkdir(parents=True)
    store.label("c" * 64, "ana", NEW_TYPE, ["alpha", "beta"])

    app = _app("results")
    [runs] = [frame.value for frame in app.dataframe if "reviewed" in frame.value]
    assert runs[["ok", "errors", "unknown", "auto_accepted", "reviewed"]].iloc[0].tolist() == [
        3, 1, 1, 1, 1]
    # the chart's bars: the same rows by decision in words, adding up to every row of the run
    words = runs[["auto-accepted", "needs a person", "new type?", "unreadable?", "error"]]
    assert words.iloc[0].tolist() == [1, 1, 1, 0, 1] and words.iloc[0].sum() == runs["rows"][0]
    assert list(DECISION_COLOURS) == [*data.DECISIONS, "reviewed"]  # a colour for each bar
    app.multiselect(key="results-decision").set_value(["new type?"]).run()
    [rows] = [frame.value for frame in app.dataframe if "decision" in frame.value]
    assert rows["decision"].tolist() == ["new type?"] and rows["reviewers"][0] == NEW_TYPE
    assert rows["photo"][0].startswith("data:image/png")
    download = app.get("download_button")[0]
    assert "Download these rows" in download.proto.label


def _validated_project(project: Params, small_demo: Path) -> None:
    from meterid.data.steps import validate_dataset

    shutil.copytree(small_demo / "raw", project.paths.raw_dir)
    broken = next(project.paths.raw_dir.iterdir()) / "broken.jpg"
    broken.write_bytes(b"not a photo")
    validate_dataset(project.paths.raw_dir, project.paths.manifest,
                     project.paths.validation_reports, project.validate_)


def test_the_data_page_names_the_offending_files(project: Params, small_demo: Path):
    from meterid.data.split import write_splits

    _validated_project(project, small_demo)
    write_splits(pd.DataFrame({"path": ["a/1.jpg", "a/2.jpg", "b/1.jpg"],
                               "label": ["a", "a", "b"], "split": ["train", "test", "train"]}),
                 project.paths.splits)
    app = _app("dataset")
    assert any("Validation failed" in error.value for error in app.error)
    offending = next(f.value for f in app.dataframe if "file" in f.value)
    assert any(path.endswith("broken.jpg") for path in offending["file"])
    split = next(f.value for f in app.dataframe if "train" in f.value)
    assert split.loc["total", "total"] == 3


@pytest.mark.slow
def test_clusters_are_added_and_rejected_from_their_cards(project: Params, small_demo: Path,
                                                         project_dir: Path):
    shutil.copytree(small_demo / "raw", project.paths.raw_dir)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], check=True,
                   env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    clustering_run(project, small_demo)

    app = _app("clusters")
    app.button(key="reject-1").click().run()
    app.button(key="cluster-confirm").click().run()
    assert any("cluster 1 rejected" in s.value for s in app.success)
    app.run()  # the next visit: the card stays, marked, without actions
    assert any("rejected" in h.value for h in app.subheader if "Cluster 1" in h.value)
    assert "reject-1" not in {b.key for b in app.button}

    app.text_input(key="label-0").set_value("newbrand").run()
    app.button(key="add-0").click().run()
    assert any("as class 'newbrand'" in w.value for w in app.warning)
    app.button(key="cluster-confirm").click().run()
    assert not app.exception, app.exception
    assert any("added 4 photos as newbrand" in s.value for s in app.success)
    assert len(list((project.paths.raw_dir / "newbrand").glob("*.jpg"))) == 4
    assert (project_dir / "data" / "raw.dvc").is_file()  # the new data version
    state = ClusterState.load(project.paths.cluster_state).clusters
    assert (state[0].status, state[1].status) == ("added", "rejected")


def test_a_cluster_whose_status_moved_is_refused(project: Params, small_demo: Path):
    from meterid.clustering.candidates import reject_cluster

    clustering_run(project, small_demo)
    app = _app("clusters")
    app.button(key="export-0").click().run()
    reject_cluster(project, 0, "someone else, meanwhile")
    app.button(key="cluster-confirm").click().run()
    assert any("cluster 0 is rejected now, not candidate" in e.value for e in app.error)
    assert not project.paths.candidates_dir.exists()


def test_the_model_page_shows_the_field_figures_of_a_version(project: Params, tiny_model,
                                                             project_dir: Path):
    # evaluate's field-test-set figure, which the live reviewed figure must not overwrite
    [version] = register_versions(tiny_model, 1, {"accuracy": 0.5, "field_accuracy": 0.9})
    table = night(project, project_dir).assign(model_version=version)
    store = open_store(project)
    store.enqueue("night-1", review_queue(table, "night-1", 1.0, 0))
    for name in ("alpha", "beta"):
        (project.paths.raw_dir / name).mkdir(parents=True)
    store.label("b" * 64, "ana", "beta", ["alpha", "beta"])   # top-1 right
    store.label("c" * 64, "ana", "beta", ["alpha", "beta"])   # top-1 "alpha": wrong

    app = _app("model")
    versions = next(f.value for f in app.dataframe if "reviewed_accuracy" in f.value)
    assert versions["reviewed_accuracy"][0] == 0.5 and versions["reviewed"][0] == 2
    assert versions["field_accuracy"][0] == 0.9
    assert any(m.value == "50.0%" for m in app.metric)
    [on] = [s.value for s in app.success if "Auto-accept on" in s.value]  # no audit judged it
    assert "No audited photo yet" in on and "at most 100" not in on  # not a bound of nothing


def test_the_model_page_says_a_version_that_certified_nothing_auto_accepts_nothing(
        project: Params, tiny_model):
    # a small collection: its out-of-fold photos certify 3.2% at best, the target is 2%
    register_versions(tiny_model, 1, {"accuracy": 0.97, "auto_accept_certified": 0.0,
                                      "auto_accept_certifiable_error": 0.032,
                                      "auto_accept_target_error": 0.02})
    app = _app("model")
    assert not any("Auto-accept on" in s.value for s in app.success)
    [note] = [i.value for i in app.info if "Auto-accept off" in i.value]
    assert "3.2% at best, above the 2.0% target" in note and "every photo goes to a person" in note


def test_the_model_page_names_why_a_version_s_reports_cannot_be_read(project: Params,
                                                                      tiny_model):
    """A run logged through `meterid serve` keeps its artifacts on the MLflow server; a
    dashboard reading the SQLite file alone cannot have them, and says why, not "none logged"."""
    from mlflow import MlflowClient

    from meterid.registry import MODEL_NAME

    register_versions(tiny_model, 1)
    client = MlflowClient()
    served = client.create_run(client.create_experiment(
        "served", artifact_location="mlflow-artifacts:/served"))
    client.create_model_version(
        MODEL_NAME, f"mlflow-artifacts:/served/{served.info.run_id}/artifacts/model",
        served.info.run_id)
    app = _app("model")
    app.selectbox[0].select(2).run()
    [error] = [e.value for e in app.error if "evaluation reports" in e.value]
    assert "cannot read version 2's evaluation reports" in error
    assert "mlflow-artifacts URI" in error
    assert not any("registered without" in i.value for i in app.info)
