"""The loop back into the dataset: a reviewed cluster becomes (part of) a class in data/raw.

export: copy a cluster's photos into a folder for a person to review (delete the wrong ones);
add: copy the reviewed photos into ``data/raw/<label>/``, re-validate the whole dataset (rolling
the copy back if a rule fails), and ``dvc add`` the new data version, so the next training run
learns the class; reject: mark a cluster so later weeks flag it instead of asking again.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
from PIL import Image

from meterid.clustering.state import ClusterState
from meterid.config import Params
from meterid.data.manifest import list_files
from meterid.data.steps import validate_dataset
from meterid.data.validation import ValidationReport
from meterid.inference.fetch import Fetcher
from meterid.photos.images import file_sha256
from meterid.review.photos import ReviewPhotos, scored_bytes
from meterid.review.store import LabelStore, known_classes

log = logging.getLogger(__name__)

LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


class CandidateError(ValueError):
    """Candidates cannot be exported or added; the message says why and what to do."""


def export_cluster(params: Params, run_dir: Path, cluster_id: int, to: Path) -> list[Path]:
    """Copy cluster ``cluster_id`` of a clustering run into ``to`` with a members.csv."""
    clusters = pd.read_parquet(run_dir / "clusters.parquet")
    members = clusters[clusters["cluster_id"] == cluster_id]
    if members.empty:
        ids = sorted(set(clusters["cluster_id"]) - {-1})
        raise CandidateError(f"{run_dir} has no cluster {cluster_id} (clusters: {ids})")
    to.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in members["path"]:
        target = to / Path(source).name
        shutil.copy2(source, target)
        copied.append(target)
    members.drop(columns=["path"]).to_csv(to / "members.csv", index=False)
    state = ClusterState.load(params.paths.cluster_state)
    if cluster_id in state.clusters:
        state.mark(cluster_id, "exported", f"exported to {to}")
        state.save(params.paths.cluster_state)
    log.info("exported %d photos of cluster %d to %s", len(copied), cluster_id, to)
    return copied


def _new_photos(folder: Path, class_dir: Path) -> list[tuple[Path, Path]]:
    """(source, target) for each image in ``folder`` not already in the class folder."""
    existing = {file_sha256(p) for p in class_dir.glob("*") if p.is_file()}
    pairs = []
    for relative in list_files(folder):
        source = folder / relative
        if source.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue  # members.csv and other notes stay behind
        sha = file_sha256(source)
        if sha not in existing:
            pairs.append((source, class_dir / f"{class_dir.name}_cand_{sha[:12]}"
                          f"{source.suffix.lower()}"))
            existing.add(sha)
    return pairs


def dvc_add(path: Path) -> bool:
    """``dvc add`` the folder when the project is a DVC repository; returns whether it did."""
    if not Path(".dvc").is_dir():
        log.warning("not a DVC repository: run `dvc add %s` to version the new data", path)
        return False
    subprocess.run([sys.executable, "-m", "dvc", "add", "--quiet", str(path)], check=True)
    return True


def add_candidates(params: Params, folder: Path, label: str,
                   cluster_id: int | None = None) -> tuple[int, ValidationReport]:
    """Add the reviewed photos in ``folder`` as class ``label``; returns (added, report)."""
    if not LABEL.match(label):
        raise CandidateError(f"label {label!r}: use letters, digits, '-', '_' or '.' (a class "
                             "folder name)")
    if not Path(folder).is_dir():
        raise CandidateError(f"{folder}: no such folder of reviewed photos")
    class_dir = params.paths.raw_dir / label
    pairs = _new_photos(Path(folder), class_dir)
    if not pairs:
        raise CandidateError(f"{folder}: no new .jpg/.png photos to add to {class_dir}")
    class_dir.mkdir(parents=True, exist_ok=True)
    for source, target in pairs:
        shutil.copy2(source, target)
    report = validate_dataset(params.paths.raw_dir, params.paths.manifest,
                              params.paths.validation_reports, params.validate_)
    if not report.success:
        for _, target in pairs:
            target.unlink(missing_ok=True)
        if not any(class_dir.iterdir()):
            class_dir.rmdir()
        failed = ", ".join(rule.name for rule in report.errors)
        raise CandidateError(f"adding {len(pairs)} photos as {label!r} broke validation rules "
                             f"({failed}); nothing was added. Report: "
                             f"{params.paths.validation_reports}")
    dvc_add(params.paths.raw_dir)
    if cluster_id is not None:
        state = ClusterState.load(params.paths.cluster_state)
        state.mark(cluster_id, "added", f"added as {label}")
        state.save(params.paths.cluster_state)
    return len(pairs), report


def reject_cluster(params: Params, cluster_id: int, note: str) -> None:
    state = ClusterState.load(params.paths.cluster_state)
    state.mark(cluster_id, "rejected", note)
    state.save(params.paths.cluster_state)


def default_folder(params: Params, cluster_id: int) -> Path:
    """Where a cluster's photos are exported for review unless told otherwise."""
    return params.paths.candidates_dir / f"cluster_{cluster_id}"


def check_status(params: Params, cluster_id: int, seen: str) -> None:
    """Refuse to act on a cluster whose review status changed since a person saw ``seen``
    (someone else added or rejected it meanwhile), or that is settled already."""
    known = ClusterState.load(params.paths.cluster_state).clusters.get(cluster_id)
    now = known.status if known else None
    if now != seen:
        raise CandidateError(f"cluster {cluster_id} is {now or 'unknown'} now, not {seen} as "
                             "when you chose: look again")
    if known is not None and now in ("added", "rejected"):
        raise CandidateError(f"cluster {cluster_id} was {now} already ({known.note})")


def add_cluster(params: Params, run_dir: Path, cluster_id: int, label: str
                ) -> tuple[int, ValidationReport]:
    """Add a cluster as (part of) class ``label`` in one step: its reviewed folder when a
    person exported and pruned it, else all its photos exported now."""
    folder = default_folder(params, cluster_id)
    if not folder.is_dir():
        export_cluster(params, run_dir, cluster_id, folder)
    return add_candidates(params, folder, label, cluster_id)


def export_reviewed(params: Params, store: LabelStore) -> dict[str, int]:
    """Reviewed field photos into their classes: each photo its reviewers agree is a known
    class (new types, non-meters, unreadable photos and conflicts stay out) is taken from the
    copy scoring kept for review, or fetched again from its URL, and added as a cluster's
    photos are (copied, re-validated, ``dvc add``); a
    photo already in its class is not added twice. Returns the photos added by class."""
    classes = set(known_classes(params))
    agreed = {sha: verdict for sha, verdict in store.agreed().items() if verdict in classes}
    urls = {photo.sha256: photo.url for photo in store.queue() if photo.sha256 in agreed}
    fetcher = Fetcher(params.score.fetch, pool_size=2)
    with tempfile.TemporaryDirectory(prefix="meterid-reviewed-") as tmp:
        staged = Path(tmp)
        try:
            kept = ReviewPhotos(params.paths.review_photos)
            for sha, url in urls.items():
                _stage(fetcher, kept, url, sha, staged / agreed[sha])
        finally:
            fetcher.close()
        return {label.name: _add_new(params, label) for label in sorted(staged.iterdir())}


def _stage(fetcher: Fetcher, kept: ReviewPhotos, url: str, sha: str, folder: Path) -> None:
    """The scored photo's bytes as a .jpg or .png in ``folder`` (other formats as PNG)."""
    data = scored_bytes(kept, fetcher, sha, url)
    if data is None:
        return
    folder.mkdir(exist_ok=True)
    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            (folder / f"{sha[:12]}.jpg").write_bytes(data)
        else:
            image.convert("RGB").save(folder / f"{sha[:12]}.png")


def _add_new(params: Params, folder: Path) -> int:
    if not _new_photos(folder, params.paths.raw_dir / folder.name):
        return 0  # every reviewed photo of this class is in the dataset already
    added, _ = add_candidates(params, folder, folder.name)
    return added
