"""`meterid init`: what a user's photos folder holds besides its class folders is kept."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from meterid.cli import app
from meterid.project import SOURCE_DIR


def test_init_keeps_the_files_beside_the_class_folders_and_says_where(tmp_path: Path):
    photos = tmp_path / "shop-photos"
    for label in ("Alpha", "Beta"):
        (photos / label).mkdir(parents=True)
        Image.new("RGB", (160, 160), "white").save(photos / label / "a.jpg")
    (photos / "LICENSE.txt").write_text("MIT License: keep this notice with every copy\n")
    (photos / ".DS_Store").write_bytes(b"\0")

    result = CliRunner().invoke(app, ["init", str(tmp_path / "project"), "--photos", str(photos)])

    assert result.exit_code == 0, result.output
    assert f"{SOURCE_DIR}/ (LICENSE.txt)" in result.output
    project = tmp_path / "project"
    assert (project / SOURCE_DIR / "LICENSE.txt").read_text().startswith("MIT License")
    assert not (project / SOURCE_DIR / ".DS_Store").exists()
    # data/raw holds only the class folders, so validation sees no file outside a class.
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == ["Alpha", "Beta"]
