"""Resumable scoring runs: finished rows are checkpointed as Parquet parts while a run goes.

A run's work folder is keyed by what decides its results (the list's bytes, the URL column, the
resolved model version, the threshold and quality limits), so starting the same run again after
a crash or ``kill -9`` finds the parts, skips their rows and scores only the rest; a different
list or model starts afresh. Each part is written to a temporary name and renamed, so a kill
mid-write leaves no half part. Shards scored by other processes (``shards.py``) write their
parts into the same folder under names of their own, so either path resumes the other's run.
``assemble`` checks that every input row is there exactly once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pandas as pd

from meterid.files import atomic_path, write_text_atomic

PART_GLOB = "part-*.parquet"


def run_key(**decisive: object) -> str:
    """A short stable hash of everything that decides a run's results."""
    text = json.dumps(decisive, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class Checkpoint:
    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    @property
    def _meta_path(self) -> Path:
        return self.work_dir / "run.json"

    def run_meta(self, defaults: dict) -> dict:
        """The run's identity (run id, output path, start time), fixed by its first start."""
        if self._meta_path.is_file():
            return json.loads(self._meta_path.read_text())
        meta = {"run_id": uuid.uuid4().hex, **defaults}
        write_text_atomic(self._meta_path, json.dumps(meta, indent=2))
        return meta

    def parts(self) -> list[Path]:
        return sorted(self.work_dir.glob(PART_GLOB))

    def done_rows(self) -> set[int]:
        done: set[int] = set()
        for part in self.parts():
            done.update(pd.read_parquet(part, columns=["row"])["row"].tolist())
        return done

    def write(self, rows: list[dict], name: str | None = None) -> Path:
        """A new part of ``rows``: the next number, or ``name`` (a shard's, matching
        ``PART_GLOB``); the temporary name is this process's, so writers never collide."""
        path = self.work_dir / (name or f"part-{len(self.parts()):06d}.parquet")
        with atomic_path(path) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)
        return path

    def assemble(self, n_rows: int) -> pd.DataFrame:
        frames = [pd.read_parquet(part) for part in self.parts()]
        scored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"row": []})
        scored = scored.sort_values("row", kind="stable").reset_index(drop=True)
        rows = scored["row"].tolist()
        if rows != list(range(n_rows)):
            missing = sorted(set(range(n_rows)) - set(rows))[:10]
            duplicated = scored.loc[scored["row"].duplicated(), "row"].tolist()[:10]
            raise RuntimeError(f"{self.work_dir}: checkpoint rows do not match the input "
                               f"({len(rows)} of {n_rows}; missing {missing}, "
                               f"duplicated {duplicated})")
        return scored

    def remove(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    return Path(path)
