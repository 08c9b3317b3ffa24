"""A user's own folder of class folders, from `meterid init` to a champion, with the real DVC,
Great Expectations, Prefect and MLflow; and an empty project that must not draw the demo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from meterid.cli import app
from meterid.config import load_params
from meterid.data.split import read_splits
from meterid.registry import list_versions
from meterid.tracking import dvc_data_version
from tests.conftest import tiny_training, write_params

pytestmark = pytest.mark.slow


def _meterid(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meterid.cli", *args], cwd=folder,
                          capture_output=True, text=True, timeout=600, check=False)


def _exif_turned(image: Image.Image, path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned, as phones do
    image.transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=90, exif=exif.tobytes())


# How a user's folder arrives: each kind is applied to every few photos, replacing the JPEG.
MIXED_KINDS = {
    "png": lambda im, stem: im.convert("RGBA").save(stem.with_suffix(".png")),
    "webp": lambda im, stem: im.save(stem.with_suffix(".webp"), "WEBP"),
    "bmp named .jpg": lambda im, stem: im.save(stem.with_suffix(".jpg"), "BMP"),
    "tiff": lambda im, stem: im.save(stem.with_suffix(".tif"), "TIFF"),
    "phone 720x1280, EXIF-turned": lambda im, stem: _exif_turned(im.resize((720, 1280)),
                                                                 stem.with_suffix(".jpg")),
    "12 MP": lambda im, stem: im.resize((3024, 4032)).save(stem.with_suffix(".jpg"), quality=85),
    "tiny crop": lambda im, stem: im.crop((30, 40, 126, 160)).save(stem.with_suffix(".jpg")),
}


def _mixed_folder(demo_raw: Path, dest: Path) -> dict[str, list[Path]]:
    """The demo's class folders as a user's archive holds them: every format the scorer reads,
    phone and 12 MP sizes, crops under the size warning, an in-class copy, and class names a
    CSV reader would turn into a missing value or a number."""
    shutil.copytree(demo_raw, dest)
    first, second = sorted(dest.iterdir())[:2]
    first.rename(dest / "NaN")
    second.rename(dest / "001")
    made: dict[str, list[Path]] = {kind: [] for kind in MIXED_KINDS}
    kinds = list(MIXED_KINDS.items())
    for i, photo in enumerate(sorted(dest.rglob("*.jpg"))[::3]):
        kind, convert = kinds[i % len(kinds)]
        with Image.open(photo) as opened:
            image = opened.convert("RGB")
        photo.unlink()
        convert(image, photo)
        made[kind].append(next(photo.parent.glob(photo.stem + ".*")))
    copy = sorted((dest / "NaN").glob("*.jpg"))[0]
    shutil.copy(copy, copy.with_name("copy-of-" + copy.name))
    return made


def test_init_from_a_mixed_folder_of_class_folders_trains_a_champion_and_scores_it(
        tmp_path: Path, small_demo: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch):
    from meterid.flows.training import training

    photos = tmp_path / "phone-archive"
    made = _mixed_folder(small_demo / "raw", photos)
    project = tmp_path / "my-meters"
    created = CliRunner().invoke(app, ["init", str(project), "--photos", str(photos)])
    assert created.exit_code == 0, created.output
    classes = sorted(p.name for p in photos.iterdir())
    assert f"{len(classes)} classes" in created.output and {"NaN", "001"} <= set(classes)
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == classes
    assert (project / "data/raw.dvc").is_file() and (project / ".dvc/config").is_file()
    params = load_params(project / "params.yaml")
    assert not params.demo.generate_if_empty
    assert "# meterid: every tunable in one place" in (project / "params.yaml").read_text()
    stages = (project / "dvc.yaml").read_text()
    assert "cmd: meterid train" in stages and "- meterid/" not in stages  # no code deps here

    validated = _meterid(project, "validate")
    report = validated.stdout + validated.stderr
    assert validated.returncode == 0, report  # warnings only: nothing here is an error
    assert "named .jpg, is BMP" in report and "format WEBP" in report and "format TIFF" in report
    assert "kept once, the split drops the other copies" in report
    assert "lower validate.min_width/min_height" in report  # the tiny crops: what to change

    # The user's params with training cut to seconds; the stores stay the project's own.
    write_params(project, tiny_training(params))
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    outcome = training(params_file="params.yaml")
    assert outcome["version"] == 1 and "champion" in outcome["aliases"]
    assert (project / "models/champion").is_dir() and (project / "mlflow/mlflow.db").is_file()
    # the version names the photos it trained on: the hash in the project's data/raw.dvc
    [version] = list_versions()
    photos_hash = dvc_data_version(project / "data/raw.dvc")
    assert photos_hash is not None and version["data_version"] == photos_hash
    metrics = json.loads((project / "reports/evaluation/metrics.json").read_text())
    assert metrics["test_images"] > 0 and metrics["unknown_flagged_share"] is None  # no held-out
    splits = read_splits(project / "data/splits.csv")
    assert {"NaN", "001"} <= set(splits["label"])  # labels keep their spelling
    assert not splits["path"].str.contains("copy-of-").any()  # the in-class copy: dropped
    # The quality gate's limits, derived from the training photos: 0-1% of them stopped.
    quality = json.loads((project / "models/candidate/run.json").read_text())["quality_limits"]
    assert quality["photos"] == int((splits["split"] == "train").sum())
    assert quality["stopped_share"] <= 0.01
    # A collection this small has too few validation photos to calibrate on: the temperature,
    # the accept bound and the prediction sets come from out-of-fold training photos, and the
    # reports say so.
    assert (splits["split"] == "val").sum() < 30
    run_info = json.loads((project / "models/candidate/run.json").read_text())
    assert run_info["calibration"]["fitted_on"] == "out-of-fold"
    assert (project / "models/candidate/out_of_fold.npz").is_file()
    assert metrics["accept_and_sets_on_out_of_fold"] == 1.0
    assert metrics["out_of_fold_photos"] == quality["photos"]
    decision = json.loads((project / "reports/evaluation/decision.json").read_text())
    assert decision["accept_and_sets_set_on"].endswith("out-of-fold training photos")
    # The flow versioned what it ran, as `dvc repro` would have: nothing left for `dvc status`.
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert list(lock) == ["validate", "split", "train", "evaluate"]
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=project,
                            capture_output=True, text=True, check=True)
    assert "up to date" in status.stdout, status.stdout

    one_of_each = [str(files[0]) for files in made.values()]
    scored = _meterid(project, "predict", "--json", *one_of_each)
    rows = [json.loads(line) for line in scored.stdout.splitlines() if line.startswith("{")]
    assert scored.returncode == 0 and len(rows) == len(MIXED_KINDS), scored.stdout + scored.stderr
    assert all(row["status"] == "ok" for row in rows), rows

    again = CliRunner().invoke(app, ["init", str(project)])
    assert again.exit_code == 2 and "already has a params.yaml" in again.output


def test_an_empty_project_fails_naming_the_folder_and_never_draws_the_demo(tmp_path: Path):
    project = tmp_path / "empty"
    assert CliRunner().invoke(app, ["init", str(project)]).exit_code == 0
    assert "one folder per meter type" in (project / "data/README.txt").read_text()
    result = _meterid(project, "flow", "data")
    assert result.returncode != 0
    assert "failed validation rules: has_images" in result.stdout + result.stderr
    assert not any((project / "data/raw").iterdir())
