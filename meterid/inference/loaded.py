"""A classifier as inference receives it, wherever it was loaded from (the MLflow registry, an
exported folder): the model with what its predictions need. Defined here, below the registry,
so that the predictor imports without MLflow."""

from __future__ import annotations

from dataclasses import dataclass

from meterid.decision.policy import DecisionPolicy
from meterid.inference.int8 import Int8Graph
from meterid.inference.quality import QualityLimits
from meterid.model.classifier import MeterClassifier, Preprocessing


@dataclass
class LoadedModel:
    """A classifier ready for inference, with what its predictions need."""

    model: MeterClassifier
    classes: list[str]
    temperature: float
    threshold: float
    preprocessing: Preprocessing
    version: int | None  # registry version; None for a run or logged-model URI
    policy: DecisionPolicy  # UNKNOWN, auto-accept and prediction-set rules, as evaluated
    source: str  # the URI (or folder) actually loaded, an alias already resolved
    int8: Int8Graph | None = None  # the checked int8 ONNX graph, when evaluation made one
    quality_limits: QualityLimits | None = None  # derived from the training photos; None: params
