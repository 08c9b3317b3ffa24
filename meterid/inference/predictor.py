"""Batched inference with the product's UNKNOWN rule: the one code path behind ``meterid
predict``, batch scoring, the dashboard and the clustering embeddings.

A prediction always keeps the top-3 labels and calibrated confidences; ``label`` is the top-1
class, or ``UNKNOWN`` when the model's open-set rule says so (by default: calibrated top-1
confidence under the threshold; with the kNN rule also an embedding far from every training
image).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from meterid.evaluation.metrics import UNKNOWN
from meterid.evaluation.openset import OpenSetRule
from meterid.inference.engines import build_engine
from meterid.model.presets import BatchNormalizer, eval_resize
from meterid.registry import LoadedModel

TOP_K = 3


@dataclass(frozen=True)
class Prediction:
    label: str
    is_unknown: bool
    top_labels: tuple[str, ...]
    top_confidences: tuple[float, ...]

    def columns(self) -> dict[str, object]:
        """Flat output columns: label, is_unknown, top1_label, top1_conf, ..., top3_conf."""
        row: dict[str, object] = {"label": self.label, "is_unknown": self.is_unknown}
        for rank in range(TOP_K):
            has = rank < len(self.top_labels)
            row[f"top{rank + 1}_label"] = self.top_labels[rank] if has else None
            row[f"top{rank + 1}_conf"] = self.top_confidences[rank] if has else None
        return row


def open_set_rule(loaded: LoadedModel, threshold: float | None = None) -> OpenSetRule:
    """The model's stored rule; ``threshold`` overrides its calibrated-confidence threshold."""
    rule = OpenSetRule(**loaded.open_set)
    return rule if threshold is None else dataclasses.replace(rule, threshold=float(threshold))


class Predictor:
    """Images in, predictions out; the preprocessing is the model's eval preset, the engine
    PyTorch or ONNX Runtime (see ``engines``)."""

    def __init__(self, loaded: LoadedModel, threshold: float | None = None,
                 engine: str = "torch", onnx_cache: Path | None = None):
        self.loaded = loaded
        self.model = loaded.model.eval()
        self.rule = open_set_rule(loaded, threshold)
        pre = loaded.preprocessing
        self.image_size = pre.image_size
        self.transform = eval_resize(pre.image_size)  # per image, in worker threads
        self.normalize = BatchNormalizer(pre.mean, pre.std)  # per batch
        self.reference = loaded.model.reference_embeddings.float().numpy()
        self.engine = build_engine(self.model, engine, onnx_cache or Path("models/onnx"),
                                   pre.image_size)

    def with_threshold(self, threshold: float | None) -> Predictor:
        """The same model and engine under another UNKNOWN threshold (a shallow copy: cheap,
        and the original is left as it was for whoever else holds it)."""
        other = copy.copy(self)
        other.rule = open_set_rule(self.loaded, threshold)
        return other

    @property
    def version(self) -> int | None:
        return self.loaded.version

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """The eval preset's resize: a uint8 CHW tensor, normalised later per batch."""
        return self.transform(image)

    def _run(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.engine(self.normalize(batch).contiguous())

    def predict(self, batch: torch.Tensor) -> list[Prediction]:
        logits, embeddings = self._run(batch)
        temperature = float(self.model.temperature)
        probabilities = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()
        return self.predictions(probabilities, embeddings)

    def predictions(self, probabilities: np.ndarray, embeddings: np.ndarray) -> list[Prediction]:
        unknown = self.rule.flags(probabilities, embeddings, self.reference)
        k = min(TOP_K, probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        classes = self.loaded.classes
        out = []
        for row, flagged, top in zip(probabilities, unknown, order, strict=True):
            labels = tuple(classes[i] for i in top)
            out.append(Prediction(label=UNKNOWN if flagged else labels[0],
                                  is_unknown=bool(flagged), top_labels=labels,
                                  top_confidences=tuple(round(float(row[i]), 6) for i in top)))
        return out

    def embed(self, batch: torch.Tensor) -> np.ndarray:
        return self._run(batch)[1]
