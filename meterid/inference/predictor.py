"""Batched inference with the product's UNKNOWN rule: the one code path behind ``meterid
predict``, batch scoring, the dashboard and the clustering embeddings.

A prediction always keeps the top-3 labels and calibrated confidences; ``label`` is the top-1
class, or ``UNKNOWN`` when the model's open-set rule says so (its score under the threshold set
at evaluation, see ``decision.policy``); ``auto_accepted`` and ``prediction_set`` come from
the certified accept rule and the conformal sets of the same policy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meterid.core import TOP_K, UNKNOWN
from meterid.decision.openset import ModelOutputs, Reference
from meterid.decision.policy import DecisionPolicy
from meterid.inference.bundle import ModelBundle
from meterid.inference.engines import build_engine
from meterid.inference.quality import is_grayscale
from meterid.model.classifier import MeterClassifier
from meterid.model.presets import BatchNormalizer, eval_resize


@dataclass(frozen=True)
class Prediction:
    label: str
    is_unknown: bool
    top_labels: tuple[str, ...]
    top_confidences: tuple[float, ...]
    open_set_score: float = float("nan")  # the open-set rule's score (UNKNOWN under threshold)
    auto_accepted: bool = False           # trusted without review (the certified rule)
    prediction_set: tuple[str, ...] = ()  # conformal candidates, most probable first
    grayscale: bool = False               # no colour (night mode, infrared): auto-accepted only
                                          # under a bound certified on grayscale photos

    def columns(self) -> dict[str, object]:
        """Flat output columns: label, is_unknown, top1_label, top1_conf, ..., top3_conf,
        open_set_score, auto_accepted, prediction_set (a list of labels), grayscale."""
        row: dict[str, object] = {"label": self.label, "is_unknown": self.is_unknown}
        for rank in range(TOP_K):
            has = rank < len(self.top_labels)
            row[f"top{rank + 1}_label"] = self.top_labels[rank] if has else None
            row[f"top{rank + 1}_conf"] = self.top_confidences[rank] if has else None
        row.update(open_set_score=self.open_set_score, auto_accepted=self.auto_accepted,
                   prediction_set=list(self.prediction_set), grayscale=self.grayscale)
        return row


def decision_policy(bundle: ModelBundle, threshold: float | None = None) -> DecisionPolicy:
    """The model's evaluated policy; ``threshold`` replaces its open-set rule by the design's
    fixed calibrated-confidence rule at that threshold."""
    return bundle.policy.with_fixed_confidence(threshold)


def reference_of(model: MeterClassifier) -> Reference:
    return Reference(model.reference_embeddings.float().numpy(),
                     model.reference_labels.numpy())


class Predictor:
    """Images in, predictions out; the preprocessing is the model's eval preset, the engine
    PyTorch, ONNX Runtime or its int8 graph from the model bundle (see ``engines``)."""

    def __init__(self, bundle: ModelBundle, threshold: float | None = None,
                 engine: str = "torch", onnx_cache: Path | None = None):
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.policy = decision_policy(bundle, threshold)
        pre = bundle.preprocessing
        self.image_size = pre.image_size
        self.transform = eval_resize(pre.image_size)  # per image, in worker threads
        self.normalize = BatchNormalizer(pre.mean, pre.std)  # per batch
        self.reference = reference_of(bundle.model)
        self.engine = build_engine(self.model, engine, onnx_cache,
                                   pre.image_size, bundle.int8)

    def with_threshold(self, threshold: float | None) -> Predictor:
        """The same model and engine under another UNKNOWN threshold (a shallow copy: cheap,
        and the original is left as it was for whoever else holds it)."""
        other = copy.copy(self)
        other.policy = decision_policy(self.bundle, threshold)
        return other

    @property
    def version(self) -> int | None:
        return self.bundle.version

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The eval preset's resize: a uint8 CHW tensor, normalised later per batch."""
        return self.transform(image)

    def _run(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.engine(self.normalize(batch).contiguous())

    def outputs(self, logits: np.ndarray, embeddings: np.ndarray,
                grayscale: np.ndarray | None = None) -> ModelOutputs:
        return self.model.outputs(logits, embeddings, grayscale)

    def predict(self, batch: torch.Tensor) -> list[Prediction]:
        """``batch``: uint8 images as ``preprocess`` gives them."""
        return self.predictions(self.outputs(*self._run(batch), is_grayscale(batch.numpy())))

    def predictions(self, outputs: ModelOutputs) -> list[Prediction]:
        decided = self.policy.decide(outputs, self.reference)
        probabilities = outputs.probabilities
        k = min(TOP_K, probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        classes = self.bundle.classes
        out = []
        for i, (row, top) in enumerate(zip(probabilities, order, strict=True)):
            labels = tuple(classes[j] for j in top)
            flagged = bool(decided.unknown[i])
            out.append(Prediction(
                label=UNKNOWN if flagged else labels[0], is_unknown=flagged, top_labels=labels,
                top_confidences=tuple(round(float(row[j]), 6) for j in top),
                open_set_score=round(float(decided.open_set_scores[i]), 6),
                auto_accepted=bool(decided.auto_accepted[i]),
                prediction_set=tuple(classes[j] for j in decided.prediction_sets[i]),
                grayscale=outputs.grayscale is not None and bool(outputs.grayscale[i])))
        return out

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch)[1]
