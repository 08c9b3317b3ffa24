"""The one atomic write every writer uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from meterid.files import atomic_path, write_text_atomic


def test_an_atomic_write_leaves_the_old_file_when_it_fails(tmp_path: Path):
    target = write_text_atomic(tmp_path / "deep" / "state.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == [
        "state.json"]
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
