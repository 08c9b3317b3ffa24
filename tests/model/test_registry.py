"""Tracking helpers and the registry against a throwaway SQLite store, with a tiny classifier."""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from meterid import registry
from meterid.decision.conformal import AcceptRule, PredictionSetRule
from meterid.decision.openset import OpenSetRule
from meterid.decision.policy import DecisionPolicy
from meterid.inference.bundle import BundleFormatError, ModelBundle
from meterid.model.backbones import build_backbone
from meterid.model.classifier import MeterClassifier, Preprocessing
from meterid.registry import (
    CHALLENGER,
    CHAMPION,
    ModelNotFoundError,
    apply_promotion_rule,
    export_model,
    list_versions,
    load_classifier,
    promote,
    register,
)
from meterid.tracking import (
    dvc_data_version,
    flatten_params,
    git_commit,
    log_epoch_history,
    photos_version,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["acme-a1", "beta-b2", "gamma-g3"]
# A certified accept rule and real sets, with an infinity the bundle's JSON must carry.
POLICY = DecisionPolicy(OpenSetRule("knn", -0.25, 5, "accepts 97% of 40 known photos"),
                        AcceptRule(0.95, 0.02, 0.1, True, 0.019, 0.95, 257),
                        PredictionSetRule(0.01, math.inf, 40))
SIZE = 32  # EfficientNet's 32x downsampling leaves 1x1: the smallest image that runs


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow database: creating the schema takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def experiment(tmp_path: Path, template_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh tracking store under tmp_path; returns an experiment id with artifacts there too."""
    shutil.copy(template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    yield mlflow.create_experiment("registry-test", artifact_location=str(tmp_path / "artifacts"))
    mlflow.end_run()
    mlflow.set_tracking_uri(None)


def tiny_bundle(seed: int, temperature: float) -> ModelBundle:
    torch.manual_seed(seed)
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none"), CLASSES)
    model.preprocessing = Preprocessing(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model.temperature.fill_(temperature)
    return ModelBundle.of(model.eval(), policy=POLICY)


@pytest.fixture(scope="module")
def bundle_a() -> ModelBundle:
    return tiny_bundle(seed=1, temperature=1.5)


@pytest.fixture(scope="module")
def bundle_b() -> ModelBundle:
    return tiny_bundle(seed=2, temperature=2.25)


def log_and_register(bundle: ModelBundle, experiment: str, accuracy: float,
                     split: str | None = "split-1") -> int:
    with mlflow.start_run(experiment_id=experiment) as run:
        info = registry.log_model(bundle)
    return register(info.model_uri, run.info.run_id, {"accuracy": accuracy, "macro_f1": 0.5},
                    test_split_id=split)


def register_again(version: int, accuracy: float, split: str | None = "split-1") -> int:
    """Another version of the same logged model (the rule reads only tags): no second upload."""
    source = MlflowClient().get_model_version(registry.MODEL_NAME, str(version))
    return register(source.source, source.run_id, {"accuracy": accuracy}, test_split_id=split)


def aliases_of(version: int) -> list[str]:
    rows = {row["version"]: row for row in list_versions()}
    return rows[version]["aliases"]


def batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(n))


def temperature(bundle: ModelBundle) -> float:
    return float(bundle.model.temperature)


def assert_same_logits(expected: MeterClassifier, actual: MeterClassifier) -> None:
    with torch.no_grad():
        for n in (2, 5):  # 5: the batch size is not frozen at the example's 2
            torch.testing.assert_close(actual(batch(n)), expected(batch(n)))


# --- tracking ------------------------------------------------------------------------------------

def test_flatten_params_gives_dotted_mlflow_safe_strings() -> None:
    flat = flatten_params({
        "train": {"phase1": {"lr": 0.001, "epochs": 60}, "crop": [0.6, 1.0], "cuda": False},
        "paths": {"raw_dir": Path("data/raw"), "note": "x" * 7000},
        "validate": {"expected_classes": []},
        "empty": {},
    })
    assert flat == {
        "train.phase1.lr": "0.001", "train.phase1.epochs": "60", "train.crop": "[0.6, 1.0]",
        "train.cuda": "False", "paths.raw_dir": "data/raw", "paths.note": flat["paths.note"],
        "validate.expected_classes": "[]",
    }
    assert len(flat["paths.note"]) == 6000 and flat["paths.note"].endswith("...")


def test_flattened_params_yaml_logs_to_mlflow(experiment: str) -> None:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    flat = flatten_params(raw)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_params(flat)
    logged = MlflowClient().get_run(run.info.run_id).data.params
    assert logged == flat
    assert logged["train.phase2.lr"] == str(raw["train"]["phase2"]["lr"])
    assert logged["train.augment.crop_scale"] == str(raw["train"]["augment"]["crop_scale"])


def test_dvc_data_version(tmp_path: Path) -> None:
    dvc_file = tmp_path / "data.dvc"
    dvc_file.write_text("outs:\n- path: data/raw\n  md5: fba9e25d238ee3c0.dir\n  nfiles: 3\n"
                        "  hash: md5\n")
    assert dvc_data_version(dvc_file) == "fba9e25d238ee3c0.dir"
    assert dvc_data_version(tmp_path / "missing.dvc") is None
    (tmp_path / "empty.dvc").write_text("outs: []\n")
    assert dvc_data_version(tmp_path / "empty.dvc") is None


def test_the_photos_version_is_read_from_the_dvc_file_that_tracks_them(tmp_path: Path) -> None:
    # this repository: data.dvc at the root tracks data/raw
    assert photos_version(REPO_ROOT, Path("data/raw")) == dvc_data_version(REPO_ROOT / "data.dvc")
    # a `meterid init` project: data/raw.dvc beside the folder, its path relative to it
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw.dvc").write_text("outs:\n- md5: d80701942cac03b9.dir\n  path: raw\n")
    assert photos_version(tmp_path, Path("data/raw")) == "d80701942cac03b9.dir"
    assert photos_version(tmp_path, Path("data/unknown")) is None  # not tracked: no version


def test_git_commit_inside_and_outside_a_repository(tmp_path: Path) -> None:
    commit = git_commit(REPO_ROOT)
    assert commit is not None and len(commit) == 40
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "does-not-exist") is None


def test_log_epoch_history_one_curve_per_phase_without_nan(experiment: str) -> None:
    history = [
        {"phase": 1, "epoch": 1, "train_loss": 1.0, "val_loss": float("nan")},
        {"phase": 1, "epoch": 2, "train_loss": 0.5, "val_loss": float("nan")},
        {"phase": 2, "epoch": 1, "train_loss": 0.4, "val_loss": 0.6},
    ]
    with mlflow.start_run(experiment_id=experiment) as run:
        log_epoch_history(history)
    client = MlflowClient()

    def curve(key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    assert sorted(curve("phase1_train_loss")) == [(1, 1.0), (2, 0.5)]
    assert curve("phase1_val_loss") == []
    assert curve("phase2_val_loss") == [(1, 0.6)]
    assert not any(math.isnan(v) for v in client.get_run(run.info.run_id).data.metrics.values())


# --- logging and promotion -----------------------------------------------------------------------

def test_log_model_needs_an_active_run(experiment: str, bundle_a: ModelBundle) -> None:
    with pytest.raises(RuntimeError, match="active MLflow run"):
        registry.log_model(bundle_a)


def test_first_version_is_champion_and_a_worse_one_only_challenger(
        experiment: str, bundle_a: ModelBundle) -> None:
    assert list_versions() == []
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    assert apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=True, margin=0.0) == [
        CHALLENGER, CHAMPION]
    v2 = register_again(v1, accuracy=0.7)
    assert apply_promotion_rule(v2, {"accuracy": 0.7}, auto_promote=True, margin=0.0) == [
        CHALLENGER]
    assert aliases_of(v1) == [CHAMPION]  # the challenger alias moved on

    rows = list_versions()
    assert [row["version"] for row in rows] == [v2, v1]
    assert rows[1]["accuracy"] == 0.8 and rows[1]["macro_f1"] == 0.5
    assert rows[0]["accuracy"] == 0.7 and rows[0]["test_split_id"] == "split-1"
    assert rows[0]["run_id"] == rows[1]["run_id"] is not None
    assert datetime.fromisoformat(rows[0]["created"]).tzinfo is not None
    assert "0.7000 < champion 0.8000" in rows[0]["promotion"]


def test_auto_promotion_needs_the_flag_and_the_margin(
        experiment: str, bundle_a: ModelBundle) -> None:
    v1 = log_and_register(bundle_a, experiment, accuracy=0.80)
    apply_promotion_rule(v1, {"accuracy": 0.80}, auto_promote=False, margin=0.05)
    v2 = register_again(v1, accuracy=0.84)
    assert apply_promotion_rule(v2, {"accuracy": 0.84}, auto_promote=True, margin=0.05) == [
        CHALLENGER]
    v3 = register_again(v1, accuracy=0.95)
    assert apply_promotion_rule(v3, {"accuracy": 0.95}, auto_promote=False, margin=0.05) == [
        CHALLENGER]
    v4 = register_again(v1, accuracy=0.85)  # better by exactly the margin
    assert apply_promotion_rule(v4, {"accuracy": 0.85}, auto_promote=True, margin=0.05) == [
        CHALLENGER, CHAMPION]
    assert aliases_of(v1) == []


def test_a_different_test_split_blocks_auto_promotion(
        experiment: str, bundle_a: ModelBundle) -> None:
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8, split="split-1")
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=True, margin=0.0)
    v2 = register_again(v1, accuracy=0.99, split="split-2")
    assert apply_promotion_rule(v2, {"accuracy": 0.99}, auto_promote=True, margin=0.0) == [
        CHALLENGER]
    assert "not comparable" in list_versions()[0]["promotion"]
    # The split given to the rule wins over the tag: same split, so now it is promoted.
    assert apply_promotion_rule(v2, {"accuracy": 0.99}, auto_promote=True, margin=0.0,
                                test_split_id="split-1") == [CHALLENGER, CHAMPION]


def test_a_version_worse_in_the_field_stays_challenger(
        experiment: str, bundle_a: ModelBundle) -> None:
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=True, margin=0.0)
    v2 = register_again(v1, accuracy=0.9)  # better on the test split, worse on field photos
    assert apply_promotion_rule(v2, {"accuracy": 0.9}, auto_promote=True, margin=0.0,
                                field=(0.70, 0.75)) == [CHALLENGER]
    assert "field accuracy 0.7000 < champion's 0.7500" in list_versions()[0]["promotion"]
    assert apply_promotion_rule(v2, {"accuracy": 0.9}, auto_promote=True, margin=0.0,
                                field=(0.75, 0.75)) == [CHALLENGER, CHAMPION]
    assert "field accuracy 0.7500 >= champion's 0.7500" in list_versions()[0]["promotion"]


def test_promote_moves_the_champion_and_names_a_missing_version(
        experiment: str, bundle_a: ModelBundle) -> None:
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    v2 = register_again(v1, accuracy=0.5)
    promote(v2)
    assert aliases_of(v2) == [CHAMPION] and aliases_of(v1) == [CHALLENGER]
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        promote(7)
    assert aliases_of(v2) == [CHAMPION]


# --- loading and exporting -----------------------------------------------------------------------

def test_load_resolves_the_alias_at_call_time_and_keeps_logits(
        experiment: str, bundle_a: ModelBundle, bundle_b: ModelBundle) -> None:
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        load_classifier("models:/meterid@champion")
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    v2 = log_and_register(bundle_b, experiment, accuracy=0.9)

    loaded = load_classifier("models:/meterid@champion")
    assert (loaded.version, loaded.classes, temperature(loaded)) == (v1, CLASSES, 1.5)
    assert loaded.policy == POLICY and loaded.card == bundle_a.card
    assert loaded.preprocessing == bundle_a.preprocessing == loaded.model.preprocessing
    assert loaded.source == f"models:/meterid/{v1}" and not loaded.model.training
    assert_same_logits(bundle_a.model, loaded.model)

    promote(v2)
    loaded = load_classifier("models:/meterid@champion")
    assert (loaded.version, temperature(loaded)) == (v2, 2.25)
    assert_same_logits(bundle_b.model, loaded.model)
    assert temperature(load_classifier(f"models:/meterid/{v1}")) == 1.5
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        load_classifier("models:/meterid/9")


def test_load_from_a_run_uri(experiment: str, bundle_a: ModelBundle) -> None:
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(bundle_a)
    loaded = load_classifier(f"runs:/{run.info.run_id}/model")
    assert loaded.version is None and loaded.classes == CLASSES
    assert_same_logits(bundle_a.model, loaded.model)


def test_export_then_load_from_the_folder(
        experiment: str, tmp_path: Path, bundle_a: ModelBundle,
        bundle_b: ModelBundle) -> None:
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    out = tmp_path / "exported" / "champion"
    assert export_model("models:/meterid@champion", out) == out

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # no registry needed
    loaded = load_classifier(str(out))
    assert (loaded.version, temperature(loaded), loaded.classes) == (v1, 1.5, CLASSES)
    assert_same_logits(bundle_a.model, loaded.model)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    v2 = log_and_register(bundle_b, experiment, accuracy=0.9)
    export_model(f"models:/meterid/{v2}", out)  # overwrites the earlier export
    assert temperature(load_classifier(str(out))) == 2.25
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_model(f"models:/meterid/{v2}", tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_load_names_what_is_not_a_bundle_it_can_read(
        experiment: str, tmp_path: Path, bundle_a: ModelBundle) -> None:
    """A card from a newer meterid, a card that does not validate, and a folder without a card
    (an MLflow model logged before bundles, as a pickle) are refused by name."""
    v1 = log_and_register(bundle_a, experiment, accuracy=0.8)
    out = export_model(f"models:/meterid/{v1}", tmp_path / "export")
    card = json.loads((out / "bundle.json").read_text())
    (out / "bundle.json").write_text(json.dumps({**card, "format": 99}))
    with pytest.raises(BundleFormatError, match="bundle format 99; this meterid reads formats 1"):
        load_classifier(str(out))
    (out / "bundle.json").write_text(json.dumps({**card, "policy": {"open_set": "?"}}))
    with pytest.raises(BundleFormatError, match="bundle format 1\\) does not read"):
        load_classifier(str(out))
    (out / "bundle.json").unlink()
    (out / "data").mkdir()
    (out / "data" / "model.pth").write_bytes(b"a pickle")
    with pytest.raises(BundleFormatError, match="before bundle format 1, as a pickle"):
        load_classifier(str(out))


def test_logging_leaves_the_callers_model_alone_and_pickles_nothing(
        experiment: str, bundle_a: ModelBundle) -> None:
    model = copy.deepcopy(bundle_a.model).train()
    with mlflow.start_run(experiment_id=experiment):
        info = registry.log_model(replace(bundle_a, model=model))
    assert model.training
    assert info.flavors[registry.FLAVOR]["format"] == 1
    assert info.signature.inputs.inputs[0].shape == (-1, 3, SIZE, SIZE)
    files = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert {p.name for p in files.iterdir()} >= {"MLmodel", "bundle.json", "weights.pt"}
    assert not [p for p in files.rglob("*") if p.suffix in (".pkl", ".pth")]


def test_the_int8_graph_and_its_check_travel_in_the_bundle(
        experiment: str, tmp_path: Path, bundle_a: ModelBundle) -> None:
    """Logged, registered, exported and loaded again: the same bytes and check, and a bundle
    whose card promises a graph it lacks is refused by name."""
    import numpy as np

    from meterid.inference.quantize import make_int8_graph

    rng = np.random.default_rng(0)
    photos = [rng.normal(size=(4, 3, SIZE, SIZE)).astype(np.float32) for _ in range(2)]
    graph = make_int8_graph(bundle_a.model, photos, photos, np.zeros(8, dtype=int),
                            lambda logits, _: (logits.argmax(1), logits.max(1) < 0),
                            "u8s8", min_agreement=0.5)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = registry.log_model(bundle_a.with_policy(POLICY, graph))
    version = register(info.model_uri, run.info.run_id, {"accuracy": 0.8}, test_split_id="s")
    loaded = load_classifier(f"models:/meterid/{version}")
    assert loaded.int8 == graph and loaded.int8.unusable() is None
    out = export_model(f"models:/meterid/{version}", tmp_path / "champion")
    assert load_classifier(str(out)).int8 == graph

    (out / "int8.onnx").unlink()
    with pytest.raises(BundleFormatError, match="records an int8 check but there is no int8"):
        load_classifier(str(out))
    without = log_and_register(bundle_a, experiment, accuracy=0.7)  # no graph: fp32 only
    assert load_classifier(f"models:/meterid/{without}").int8 is None


def test_the_quality_limits_travel_in_the_bundle(
        experiment: str, bundle_a: ModelBundle) -> None:
    """Derived limits logged with the model come back typed; a bundle without them (trained
    before them) loads with None: the params' limits."""
    from meterid.inference.quality import QualityLimits

    limits = QualityLimits(0.1, 0.95, 0.05, 10.0, 0.88, "training photos", 761, 0.004,
                           {"max_glare": 0.6, "any": 0.6})
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(ModelBundle.of(bundle_a.model, quality_limits=limits))
    assert load_classifier(f"runs:/{run.info.run_id}/model").quality_limits == limits
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(bundle_a)
    assert load_classifier(f"runs:/{run.info.run_id}/model").quality_limits is None
