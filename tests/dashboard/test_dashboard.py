"""The dashboard: its readers on generated outputs, and the real Streamlit app (AppTest) doing
real-time inference with a model exported through the real MLflow registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from meterid.config import Params, load_params
from meterid.core import ERROR, OK, ScoredRow
from meterid.dashboard import data
from tests.conftest import REPO_ROOT
from tests.integration.production import register_versions

APP = REPO_ROOT / "meterid" / "dashboard" / "app.py"


@pytest.fixture
def project(project_dir: Path) -> Params:
    shutil.copy(REPO_ROOT / "params.yaml", project_dir / "params.yaml")
    return load_params(project_dir / "params.yaml")


def _scoring_output(path: Path, labels: list[str | None], conf: list[float | None],
                    accepted: list[bool | None] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"status": ["ok" if label else "error" for label in labels], "label": labels,
                  "error": [None if label else "fetch failed: HTTP 404" for label in labels],
                  "is_unknown": [label == "UNKNOWN" for label in labels],
                  "auto_accepted": accepted or [None] * len(labels),
                  "top1_conf": conf, "url": [f"u{i}" for i in range(len(labels))],
                  "sha256": [f"{path.stem}{i}" for i in range(len(labels))]}
                 ).to_parquet(path)


def test_scoring_history_summarises_every_output(project: Params):
    folder = project.paths.scoring_reports
    _scoring_output(folder / "monday.parquet", ["a", "UNKNOWN", "POOR_QUALITY", None],
                    [0.9, 0.3, 0.8, None], [True, False, False, None])
    _scoring_output(folder / "tuesday.parquet", ["a", "a"], [1.0, 0.8])
    history = data.scoring_history(project, frozenset({"monday1", "monday2"})
                                   ).set_index("output")
    monday = history.loc["monday.parquet"]
    assert (monday["rows"], monday["errors"]) == (4, 1)
    assert (monday["ok"], monday["unknown"], monday["poor_quality"]) == (3, 1, 1)
    assert (monday["auto_accepted"], monday["reviewed"]) == (1, 2)
    assert monday["unknown_share"] == pytest.approx(1 / 3)
    assert monday["poor_quality_share"] == pytest.approx(1 / 3)
    assert history.loc["tuesday.parquet", "mean_confidence"] == pytest.approx(0.9)
    assert history.loc["tuesday.parquet", "reviewed"] == 0
    assert data.label_counts(project, "monday.parquet").to_dict() == {
        "a": 1, "UNKNOWN": 1, "POOR_QUALITY": 1, "ERROR": 1}


def test_readers_are_empty_before_their_steps_ran(project: Params):
    assert data.scoring_history(project).empty
    assert data.latest_clusters(project).folder is None
    view = data.evaluation(project)
    assert view.metrics is None and view.per_class is None and view.confusion_matrix is None


def test_a_version_s_reports_come_from_the_registry(
        project: Params, tiny_model, tmp_path: Path):
    import mlflow

    from meterid import registry

    [without] = register_versions(tiny_model, 1)
    assert data.version_reports(without) == data.VersionReports()

    reports = tmp_path / "evaluation"
    reports.mkdir()
    pd.DataFrame({"class": ["a"], "recall": [0.9]}).to_csv(reports / "per_class.csv", index=False)
    with mlflow.start_run() as run:
        info = registry.log_model(tiny_model)
        mlflow.log_artifacts(str(reports), artifact_path="evaluation")
    logged = data.version_reports(registry.register(info.model_uri, run.info.run_id,
                                                    {"accuracy": 0.9}))
    assert logged.per_class["recall"].tolist() == [0.9] and logged.unreadable is None


def test_latest_clusters_picks_the_newest_run(project: Params):
    for day in ("2026-11-16", "2026-11-23"):
        run = project.paths.cluster_reports / day
        (run / "sheets").mkdir(parents=True)
        pd.DataFrame({"cluster_id": [0]}).to_parquet(run / "clusters.parquet")
        pd.DataFrame({"cluster_id": [0], "size": [9]}).to_csv(run / "summary.csv", index=False)
        Image.new("RGB", (8, 8)).save(run / "clusters.png")
        Image.new("RGB", (8, 8)).save(run / "sheets" / "cluster_000.png")
    view = data.latest_clusters(project)
    assert view.folder.name == "2026-11-23" and view.summary["size"].tolist() == [9]
    assert view.cluster_map.is_file() and list(view.sheets) == ["cluster_000"]


def test_top3_keeps_the_ranked_labels():
    row = ScoredRow(0, "x.jpg", OK, top1_label="a", top1_conf=0.7, top2_label="b",
                    top2_conf=0.2, top3_label="c", top3_conf=0.1)
    assert data.top3(row)["label"].tolist() == ["a", "b", "c"]
    assert data.top3(ScoredRow(0, "x.jpg", ERROR, error="broken")).empty


def _photo(path: Path) -> Path:
    rng = np.random.default_rng(0)  # texture, so the quality gate sees a sharp, lit photo
    Image.fromarray(rng.integers(40, 220, (96, 72, 3), dtype=np.uint8)).save(path)
    return path


def test_an_upload_is_scored_like_a_listed_photo(tiny_model, params: Params, tmp_path: Path):
    from meterid.inference.fetch import Fetcher
    from meterid.inference.predictor import Predictor
    from meterid.scoring.pipeline import BatchScorer

    def scorer() -> BatchScorer:  # a new one each time: no cached result is reused
        return BatchScorer(Predictor(tiny_model), Fetcher(params.score.fetch, pool_size=1),
                           params.score.quality, params.validate_.max_pixels, 4, 1)

    photo = _photo(tmp_path / "meter.png")
    uploaded = data.identify_upload(scorer(), "field/meter.png", photo.read_bytes())
    listed = scorer().score_in_order([str(photo)])[0]
    assert uploaded.url == "field/meter.png" and uploaded.status == "ok"
    for key in ("label", "top1_label", "top2_label", "top3_label", "sha256"):
        assert getattr(uploaded, key) == getattr(listed, key)
    assert uploaded.top1_conf == pytest.approx(listed.top1_conf)
    broken = data.identify_upload(scorer(), "broken.jpg", b"not an image")
    assert broken.status == "error" and broken.url == "broken.jpg"


PAGES = ("results", "identify", "clusters", "model", "dataset", "retrain")


def test_every_page_opens_and_says_what_is_missing(project: Params):
    """An empty project: each page opens without a traceback and names the command that
    produces what it would show."""
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception and [h.value for h in app.header] == ["Review"]
    said = []
    for page in PAGES:
        app.switch_page(f"views/{page}.py").run()
        assert not app.exception, (page, app.exception)
        said += [message.value for message in (*app.info, *app.error)]
    for hint in ("meterid score", "meterid cluster", "meterid flow train", "meterid validate",
                 "meterid split", "PREFECT_API_URL"):
        assert any(hint in message for message in said), hint
    # the default model (the registry's champion) does not exist in this empty store
    assert any("cannot load model" in message for message in said)


def test_identify_scores_listed_photos_and_names_a_missing_one(
        project: Params, exported_model: Path, project_dir: Path):
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page("views/identify.py").run()
    app.text_input(key="model").set_value(str(exported_model)).run()
    photo = _photo(project_dir / "meter.png")
    app.text_area[0].set_value(f"{photo}\n{project_dir / 'missing.jpg'}").run()
    app.button[0].click().run()
    assert not app.exception
    labels = [header.value for header in app.subheader]
    assert len(labels) == 1 and labels[0] in {"alpha", "beta", "gamma", "UNKNOWN"}
    assert any("missing.jpg" in error.value for error in app.error)
    assert len(app.dataframe) == 1 and len(app.dataframe[0].value) == 3  # the top-3


def test_meterid_dashboard_serves_on_localhost(project_dir: Path):
    import socket
    import subprocess
    import sys
    import time

    import requests

    shutil.copy(REPO_ROOT / "params.yaml", project_dir / "params.yaml")
    with socket.socket() as probe:  # a free port on 127.0.0.1
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "meterid.cli", "dashboard", "--port",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = None
        for _ in range(120):  # at most ~60 s, one request each half second
            try:
                health = requests.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert health is not None and health.status_code == 200 and health.text == "ok"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_app_follows_a_promotion_without_a_restart(project: Params, tiny_model, project_dir: Path):
    from streamlit.testing.v1 import AppTest

    from meterid import registry

    versions = register_versions(tiny_model, 2)
    photo = _photo(project_dir / "meter.png")

    def identified_by(app: AppTest) -> str:
        app.switch_page("views/identify.py").run()
        app.text_area[0].set_value(str(photo)).run()
        app.button[0].click().run()
        assert not app.exception
        return " ".join(caption.value for caption in app.caption)

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert f"model v{versions[0]}" in identified_by(app)
    registry.promote(versions[1])  # e.g. in the MLflow UI, while the page is open
    assert f"model v{versions[1]}" in identified_by(app)


def test_a_reviewer_labels_the_queue_in_the_app_and_sees_a_conflict(project: Params,
                                                                    project_dir: Path):
    """The Review tab on a real label store: one click on a candidate, one on "not a meter";
    each label lands with the reviewer's name, and another reviewer's disagreement shows."""
    from streamlit.testing.v1 import AppTest

    from meterid.core import UNKNOWN
    from meterid.review.queue import review_queue
    from meterid.review.store import NOT_A_METER, open_store

    for name in ("alpha", "beta"):
        (project_dir / "data/raw" / name).mkdir(parents=True)
    photos = [_photo(project_dir / f"field-{i}.png") for i in range(2)]
    photos[1].write_bytes(photos[1].read_bytes() + b"x")  # another photo, another sha256
    rows = [ScoredRow(0, str(photos[0]), OK, label="alpha", auto_accepted=False,
                      prediction_set=["alpha", "beta"], sha256="a1" * 32, model_version=1),
            ScoredRow(1, str(photos[1]), OK, label=UNKNOWN, auto_accepted=False,
                      top1_label="beta", sha256="b2" * 32, model_version=1)]
    store = open_store(project)
    store.enqueue("night", review_queue(pd.DataFrame([r.to_dict() for r in rows]), "night",
                                        0.0, 0))

    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert any("Enter your name" in info.value for info in app.info)
    app.text_input(key="reviewer").set_value("ana").run()
    assert [h.value for h in app.subheader][0] == "alpha? candidates: alpha | beta"
    app.button(key="pick-beta").click().run()
    assert not app.exception and store.verdicts("a1" * 32) == {"ana": "beta"}
    assert [h.value for h in app.subheader][0] == "new type?"
    app.button(key=f"verdict-{NOT_A_METER}").click().run()
    assert store.verdicts("b2" * 32) == {"ana": NOT_A_METER}
    assert any("Nothing waits for you" in s.value for s in app.success)

    store.label("a1" * 32, "ben", "alpha", ["alpha", "beta"])
    app.run()
    assert any("reviewers disagree" in e.label for e in app.expander)


def test_a_person_promotes_a_version_in_the_app_and_a_moved_champion_is_refused(
        project: Params, tiny_model, project_dir: Path):
    """The Model tab's promotion on a real MLflow registry: chosen, confirmed, recorded with who
    and when, exported; a confirmation after someone else promoted meanwhile is refused."""
    from streamlit.testing.v1 import AppTest

    from meterid import registry

    versions = register_versions(tiny_model, 3)

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page("views/model.py").run()
    app.selectbox(key="promote-version").set_value(versions[1]).run()
    app.text_input(key="promote-by").set_value("ana").run()
    app.button[[b.label for b in app.button].index(f"Promote version {versions[1]}")].click()
    app.run()
    assert any("Sure?" in w.value for w in app.warning)
    app.button(key="promote-confirm").click().run()
    assert not app.exception, app.exception
    rows = {row["version"]: row for row in registry.list_versions()}
    assert "champion" in rows[versions[1]]["aliases"] and rows[versions[1]]["promoted_by"] == "ana"
    assert rows[versions[1]]["promoted_at"] and (project_dir / "models/champion").is_dir()

    app.run()
    app.selectbox(key="promote-version").set_value(versions[2]).run()
    app.button[[b.label for b in app.button].index(f"Promote version {versions[2]}")].click()
    app.run()
    registry.promote(versions[0])  # someone else, while the question was on screen
    app.button(key="promote-confirm").click().run()
    assert any("the champion is version" in e.value for e in app.error)
    assert "champion" in {row["version"]: row for row in registry.list_versions()}[
        versions[0]]["aliases"]
