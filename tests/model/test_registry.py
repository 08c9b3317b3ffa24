"""Tracking helpers and the registry against a throwaway SQLite store, with a tiny classifier."""

from __future__ import annotations

import copy
import math
import shutil
from datetime import datetime
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from meterid import registry
from meterid.decision.conformal import AcceptRule, PredictionSetRule
from meterid.decision.openset import OpenSetRule
from meterid.decision.policy import DecisionPolicy
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
from meterid.tracking import dvc_data_version, flatten_params, git_commit, log_epoch_history

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["acme-a1", "beta-b2", "gamma-g3"]
# A certified accept rule and real sets, with an infinity the MLmodel YAML must carry.
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


def tiny_model(seed: int, temperature: float) -> MeterClassifier:
    torch.manual_seed(seed)
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none"), CLASSES)
    model.preprocessing = Preprocessing(SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model.temperature.fill_(temperature)
    model.decision = POLICY.to_dict()
    return model.eval()


@pytest.fixture(scope="module")
def model_a() -> MeterClassifier:
    return tiny_model(seed=1, temperature=1.5)


@pytest.fixture(scope="module")
def model_b() -> MeterClassifier:
    return tiny_model(seed=2, temperature=2.25)


def log_and_register(model: MeterClassifier, experiment: str, accuracy: float,
                     split: str | None = "split-1") -> int:
    with mlflow.start_run(experiment_id=experiment) as run:
        info = registry.log_model(model, threshold=0.4)
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

def test_log_model_needs_an_active_run(experiment: str, model_a: MeterClassifier) -> None:
    with pytest.raises(RuntimeError, match="active MLflow run"):
        registry.log_model(model_a, threshold=0.4)


def test_first_version_is_champion_and_a_worse_one_only_challenger(
        experiment: str, model_a: MeterClassifier) -> None:
    assert list_versions() == []
    v1 = log_and_register(model_a, experiment, accuracy=0.8)
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
        experiment: str, model_a: MeterClassifier) -> None:
    v1 = log_and_register(model_a, experiment, accuracy=0.80)
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
        experiment: str, model_a: MeterClassifier) -> None:
    v1 = log_and_register(model_a, experiment, accuracy=0.8, split="split-1")
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=True, margin=0.0)
    v2 = register_again(v1, accuracy=0.99, split="split-2")
    assert apply_promotion_rule(v2, {"accuracy": 0.99}, auto_promote=True, margin=0.0) == [
        CHALLENGER]
    assert "not comparable" in list_versions()[0]["promotion"]
    # The split given to the rule wins over the tag: same split, so now it is promoted.
    assert apply_promotion_rule(v2, {"accuracy": 0.99}, auto_promote=True, margin=0.0,
                                test_split_id="split-1") == [CHALLENGER, CHAMPION]


def test_promote_moves_the_champion_and_names_a_missing_version(
        experiment: str, model_a: MeterClassifier) -> None:
    v1 = log_and_register(model_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    v2 = register_again(v1, accuracy=0.5)
    promote(v2)
    assert aliases_of(v2) == [CHAMPION] and aliases_of(v1) == [CHALLENGER]
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        promote(7)
    assert aliases_of(v2) == [CHAMPION]


# --- loading and exporting -----------------------------------------------------------------------

def test_load_resolves_the_alias_at_call_time_and_keeps_logits(
        experiment: str, model_a: MeterClassifier, model_b: MeterClassifier) -> None:
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        load_classifier("models:/meterid@champion")
    v1 = log_and_register(model_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    v2 = log_and_register(model_b, experiment, accuracy=0.9)

    loaded = load_classifier("models:/meterid@champion")
    assert (loaded.version, loaded.classes, loaded.temperature) == (v1, CLASSES, 1.5)
    assert (loaded.threshold, loaded.policy) == (0.4, POLICY)
    assert loaded.preprocessing == model_a.preprocessing == loaded.model.preprocessing
    assert loaded.source == f"models:/meterid/{v1}" and not loaded.model.training
    assert_same_logits(model_a, loaded.model)

    promote(v2)
    loaded = load_classifier("models:/meterid@champion")
    assert (loaded.version, loaded.temperature) == (v2, 2.25)
    assert_same_logits(model_b, loaded.model)
    assert load_classifier(f"models:/meterid/{v1}").temperature == 1.5
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        load_classifier("models:/meterid/9")


def test_load_from_a_run_uri(experiment: str, model_a: MeterClassifier) -> None:
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(model_a, threshold=0.4)
    loaded = load_classifier(f"runs:/{run.info.run_id}/model")
    assert loaded.version is None and loaded.classes == CLASSES
    assert_same_logits(model_a, loaded.model)


def test_export_then_load_from_the_folder(
        experiment: str, tmp_path: Path, model_a: MeterClassifier,
        model_b: MeterClassifier) -> None:
    v1 = log_and_register(model_a, experiment, accuracy=0.8)
    apply_promotion_rule(v1, {"accuracy": 0.8}, auto_promote=False, margin=0.0)
    out = tmp_path / "exported" / "champion"
    assert export_model("models:/meterid@champion", out) == out

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # no registry needed
    loaded = load_classifier(str(out))
    assert (loaded.version, loaded.temperature, loaded.classes) == (v1, 1.5, CLASSES)
    assert_same_logits(model_a, loaded.model)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    v2 = log_and_register(model_b, experiment, accuracy=0.9)
    export_model(f"models:/meterid/{v2}", out)  # overwrites the earlier export
    assert load_classifier(str(out)).temperature == 2.25
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_model(f"models:/meterid/{v2}", tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_load_rejects_metadata_that_contradicts_the_weights(
        experiment: str, tmp_path: Path, model_a: MeterClassifier) -> None:
    v1 = log_and_register(model_a, experiment, accuracy=0.8)
    out = export_model(f"models:/meterid/{v1}", tmp_path / "export")
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    mlmodel["metadata"]["classes"] = ["other", "classes", "here"]
    (out / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(registry.ModelMetadataError, match="classes"):
        load_classifier(str(out))
    del mlmodel["metadata"]["threshold"]
    (out / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(registry.ModelMetadataError, match="threshold"):
        load_classifier(str(out))


def test_logging_leaves_the_callers_model_alone(
        experiment: str, model_a: MeterClassifier) -> None:
    model = copy.deepcopy(model_a).train()
    with mlflow.start_run(experiment_id=experiment):
        info = registry.log_model(model, threshold=0.4)
    assert model.training
    assert info.metadata["backbone"] == "efficientnet_lite0"
    assert info.signature.inputs.inputs[0].shape == (-1, 3, SIZE, SIZE)
    assert isinstance(mlflow.pytorch.load_model(info.model_uri), MeterClassifier)


def test_the_int8_graph_and_its_check_travel_in_the_bundle(
        experiment: str, tmp_path: Path, model_a: MeterClassifier) -> None:
    """Logged, registered, exported and loaded again: the same bytes and check, and a bundle
    whose metadata promises a graph it lacks is refused by name."""
    import numpy as np

    from meterid.inference.quantize import make_int8_graph

    rng = np.random.default_rng(0)
    photos = [rng.normal(size=(4, 3, SIZE, SIZE)).astype(np.float32) for _ in range(2)]
    graph = make_int8_graph(model_a, photos, photos, np.zeros(8, dtype=int),
                            lambda logits, _: (logits.argmax(1), logits.max(1) < 0),
                            "u8s8", min_agreement=0.5)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = registry.log_model(model_a, threshold=0.4, int8=graph)
    version = register(info.model_uri, run.info.run_id, {"accuracy": 0.8}, test_split_id="s")
    loaded = load_classifier(f"models:/meterid/{version}")
    assert loaded.int8 == graph and loaded.int8.unusable() is None
    out = export_model(f"models:/meterid/{version}", tmp_path / "champion")
    assert load_classifier(str(out)).int8 == graph

    (out / "extra_files" / "int8.onnx").unlink()
    with pytest.raises(registry.ModelMetadataError, match="has no extra_files/int8.onnx"):
        load_classifier(str(out))
    without = log_and_register(model_a, experiment, accuracy=0.7)  # no graph: a bundle as before
    assert load_classifier(f"models:/meterid/{without}").int8 is None


def test_the_quality_limits_travel_in_the_bundle_and_older_bundles_have_none(
        experiment: str, model_a: MeterClassifier) -> None:
    """Derived limits logged with the model come back on the LoadedModel (and its classifier);
    a model logged without them (trained before them) loads with None: the params' limits."""
    from meterid.inference.quality import QualityLimits

    limits = QualityLimits(0.1, 0.95, 0.05, 10.0, 0.88, "training photos", 761, 0.004,
                           {"max_glare": 0.6, "any": 0.6})
    model = copy.deepcopy(model_a)
    model.quality_limits = limits.to_dict()
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(model, threshold=0.4)
    loaded = load_classifier(f"runs:/{run.info.run_id}/model")
    assert loaded.quality_limits == limits and loaded.model.quality_limits == limits.to_dict()
    with mlflow.start_run(experiment_id=experiment) as run:
        registry.log_model(model_a, threshold=0.4)
    old = load_classifier(f"runs:/{run.info.run_id}/model")
    assert old.quality_limits is None and old.model.quality_limits is None
