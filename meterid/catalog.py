"""The files the stages write under ``params.paths``, named once: writers, readers (evaluation,
the dashboard) and ``dvc.yaml`` (generated from meterid/pipeline.py, checked by
tests/test_catalog.py) use these names instead of literals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meterid.config import Params


@dataclass(frozen=True)
class EvaluationReports:
    """What ``meterid evaluate`` writes (``paths.evaluation_reports``)."""

    folder: Path

    @property
    def metrics(self) -> Path:           # flat keys; dvc metrics
        return self.folder / "metrics.json"

    @property
    def field_per_class(self) -> Path:   # recall per class on the reviewed field photos
        return self.folder / "field_per_class.csv"

    @property
    def per_class(self) -> Path:         # precision, recall, support, CV recall per class
        return self.folder / "per_class.csv"

    @property
    def audit(self) -> Path:             # every test photo: truth, prediction, top-3, UNKNOWN
        return self.folder / "audit.csv"

    @property
    def confusion_matrix(self) -> Path:
        return self.folder / "confusion_matrix.png"

    @property
    def decision(self) -> Path:          # the policy stored with the model, and where it was set
        return self.folder / "decision.json"

    @property
    def open_set(self) -> Path:          # every open-set candidate at the operating point
        return self.folder / "open_set.csv"

    @property
    def open_set_plot(self) -> Path:
        return self.folder / "open_set.png"

    @property
    def calibration(self) -> Path:       # the temperature, why, and ECE before and after
        return self.folder / "calibration.json"

    @property
    def int8(self) -> Path:              # the int8 graph's check against fp32
        return self.folder / "int8.json"

    @property
    def suspect_labels(self) -> Path:
        return self.folder / "suspect_labels.csv"

    @property
    def suspect_sheet(self) -> Path:
        return self.folder / "suspect_labels.png"

    def tracked(self) -> dict[str, Path]:
        """The files every evaluation writes (dvc.yaml's outputs of the evaluate stage)."""
        return {name: getattr(self, name) for name in (
            "metrics", "per_class", "audit", "confusion_matrix", "decision", "open_set",
            "open_set_plot", "calibration", "int8")}


@dataclass(frozen=True)
class CandidateFiles:
    """What ``meterid train`` leaves for ``meterid evaluate`` (a dvc output)."""

    folder: Path

    @property
    def bundle(self) -> Path:
        """The trained model as a bundle (``inference.bundle``), its policy still untested."""
        return self.folder / "bundle"

    @property
    def frozen_embeddings(self) -> Path:
        return self.folder / "frozen_embeddings.npz"

    @property
    def out_of_fold(self) -> Path:
        """Cross-fitted logits of the training photos; only when validation was too small."""
        return self.folder / "out_of_fold.npz"

    @property
    def run_info(self) -> Path:
        return self.folder / "run.json"


def candidate_files(params: Params) -> CandidateFiles:
    return CandidateFiles(params.paths.models_dir / "candidate")
