"""``meterid init``: a project folder for a user's own photos, ready for ``meterid flow train``.

The folder gets this checkout's ``params.yaml`` (with its comments; demo generation off),
``dvc.yaml`` and ``prefect.yaml``, the ``data/raw/<class>/`` layout (the user's class folders
copied in, or an explanation of what to put there), a DVC repository with a local remote and
``data/raw`` tracked, and the local stores (MLflow's SQLite store, Prefect's home) created on
first use. Nothing in an existing project is overwritten.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import meterid

TEMPLATE_FILES = ("params.yaml", "dvc.yaml", "prefect.yaml")
RAW_README = """Put one folder per meter type here, named by its class (the folder name is the
label, kept as written: "NaN" or "001" stay text):

    data/raw/<class>/<photo>.jpg    (JPEG, PNG, WEBP, BMP, GIF, TIFF)

At least validate.min_images_per_class photos per class (params.yaml). Photos of brands the model
must NOT know go to data/unknown/<brand>/ (optional): evaluation chooses and measures the UNKNOWN
rule on them. Then: meterid validate, and meterid flow train.
"""


class InitError(RuntimeError):
    """The project cannot be made as asked (the cause is in the message)."""


@dataclass(frozen=True)
class NewProject:
    folder: Path
    classes: list[str]
    photos: int
    kept_files: list[str]  # files beside the class folders (a licence, notes), in data/source


SOURCE_DIR = Path("data/source")  # what came with the photos; meterid never reads it


def template_root() -> Path:
    """The checkout the package runs from (``pip install -e .``, as ``make install`` does)."""
    root = Path(meterid.__file__).resolve().parents[1]
    missing = [name for name in TEMPLATE_FILES if not (root / name).is_file()]
    if missing:
        raise InitError(f"meterid init copies {', '.join(missing)} from the meterid checkout, "
                        f"and {root} has none: run it from a clone installed with `make install`")
    return root


def _project_params(text: str) -> str:
    """The template's params.yaml with the demo kept out of the user's data folder."""
    text, n = re.subn(r"(?m)^(\s*generate_if_empty:\s*)true\b", r"\1false", text)
    if n != 1:
        raise InitError("the template params.yaml has no `demo.generate_if_empty: true` line")
    return text


def _project_dvc(text: str) -> str:
    """The template's dvc.yaml without its source-code dependencies (``meterid/...``): they
    exist in a checkout of meterid, not in a user's project, where dvc would call them deleted."""
    return re.sub(r"(?m)^\s*- meterid/\S*.*\n", "", text)


_TEMPLATE_EDITS = {"params.yaml": _project_params, "dvc.yaml": _project_dvc}


def _class_folders(photos: Path) -> list[Path]:
    if not photos.is_dir():
        raise InitError(f"{photos} is not a folder of class folders")
    folders = sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InitError(f"{photos} holds no class folders: expected {photos}/<class>/<photo>")
    return folders


def _loose_files(photos: Path) -> list[Path]:
    """Files beside the class folders: not photos of a class, but a licence must travel with
    every copy of a collection, so init keeps them rather than dropping them unsaid."""
    return sorted(p for p in photos.iterdir() if p.is_file() and not p.name.startswith("."))


def _dvc(folder: Path, *args: str) -> None:
    # dvc of this interpreter's environment, whether or not its bin folder is on PATH
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=folder,
                            capture_output=True, text=True, check=False)
    if result.returncode:
        raise InitError(f"dvc {' '.join(args)} failed in {folder}: "
                        f"{(result.stderr or result.stdout).strip()}")


def _inside_git(folder: Path) -> bool:
    return subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=folder,
                          capture_output=True, check=False).returncode == 0


def init_project(folder: Path, photos: Path | None = None) -> NewProject:
    """Make ``folder`` a meterid project; copy the class folders of ``photos`` into data/raw."""
    folder = Path(folder).resolve()
    if (folder / "params.yaml").exists():
        raise InitError(f"{folder} already has a params.yaml: it is a project already")
    classes = _class_folders(Path(photos)) if photos is not None else []
    root = template_root()
    raw = folder / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (folder / "data" / "unknown").mkdir(exist_ok=True)
    for name in TEMPLATE_FILES:
        text = (root / name).read_text()
        (folder / name).write_text(_TEMPLATE_EDITS.get(name, str)(text))
    for source in classes:
        shutil.copytree(source, raw / source.name, dirs_exist_ok=False)
    loose = _loose_files(Path(photos)) if photos is not None else []
    for file in loose:
        (folder / SOURCE_DIR).mkdir(exist_ok=True)
        shutil.copy2(file, folder / SOURCE_DIR / file.name)
    (folder / "data" / "README.txt").write_text(RAW_README)
    (folder / "mlflow").mkdir(exist_ok=True)
    _dvc(folder, "init", *(() if _inside_git(folder) else ("--no-scm",)))
    _dvc(folder, "config", "core.analytics", "false")
    _dvc(folder, "remote", "add", "--default", "localstore", str(folder / "dvc-storage"))
    if classes:
        _dvc(folder, "add", "data/raw")
    n = sum(1 for p in raw.rglob("*") if p.is_file())
    return NewProject(folder, [c.name for c in classes], n, [f.name for f in loose])
