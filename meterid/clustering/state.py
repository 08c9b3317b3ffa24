"""What the weekly runs remember about clusters: ids, centroids and a person's review.

One JSON file (``paths.cluster_state``): the next free id and, per cluster id, the model it was
found with, its centroid, when it was seen and its review status. ``rejected`` clusters (a person
decided they are not a new meter type: screenshots, blurred junk, a known meter at an odd angle)
are still clustered and reported, but flagged, so they stop asking for review every week.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from meterid.files import write_text_atomic

STATUSES = ("candidate", "rejected", "exported", "added")


@dataclass
class KnownCluster:
    id: int
    model_key: str
    centroid: list[float]
    first_seen: str
    last_seen: str
    size: int
    status: str = "candidate"
    note: str = ""


@dataclass
class ClusterState:
    next_id: int = 0
    clusters: dict[int, KnownCluster] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ClusterState:
        if not Path(path).is_file():
            return cls()
        raw = json.loads(Path(path).read_text())
        clusters = {int(k): KnownCluster(**v) for k, v in raw["clusters"].items()}
        return cls(next_id=int(raw["next_id"]), clusters=clusters)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps({"next_id": self.next_id, "clusters": {
            str(k): asdict(v) for k, v in sorted(self.clusters.items())}}, indent=1))

    def centroids_for(self, model_key: str) -> dict[int, np.ndarray]:
        return {k: np.asarray(c.centroid, dtype=np.float32) for k, c in self.clusters.items()
                if c.model_key == model_key}

    def record(self, cluster_id: int, model_key: str, centroid: np.ndarray, size: int,
               seen: str) -> KnownCluster:
        known = self.clusters.get(cluster_id)
        if known is None:
            known = KnownCluster(cluster_id, model_key, [], seen, seen, size)
            self.clusters[cluster_id] = known
        known.centroid = [round(float(v), 6) for v in centroid]
        known.last_seen, known.size = seen, size
        self.next_id = max(self.next_id, cluster_id + 1)
        return known

    def mark(self, cluster_id: int, status: str, note: str = "") -> KnownCluster:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        if cluster_id not in self.clusters:
            known = ", ".join(map(str, sorted(self.clusters))) or "none yet"
            raise KeyError(f"no cluster {cluster_id} (known: {known})")
        self.clusters[cluster_id].status = status
        self.clusters[cluster_id].note = note
        return self.clusters[cluster_id]
