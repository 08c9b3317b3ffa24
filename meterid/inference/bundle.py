"""The model bundle: a trained classifier and everything its predictions need, in one folder
that ``write_bundle`` writes and ``read_bundle`` reads, and nothing else does.

Training writes the candidate's bundle, evaluation adds the decision policy and the int8 graph,
the registry stores the same folder as an MLflow model, and the predictor, the engines and the
dashboard read it back. The folder holds:

- ``bundle.json``: the ``BundleCard`` (format version, the network's description, the decision
  policy, the quality gate's limits, the int8 graph's check), validated by pydantic on reading;
- ``weights.pt``: the state dict, read with ``torch.load(weights_only=True)``, so a bundle from a
  shared registry can hold tensors but no code;
- ``int8.onnx``: the quantized graph, when evaluation made one.

Adding a field to the bundle is one edit: a field of ``BundleCard`` with a default (so bundles
written before it read back with the default); tests/model/test_bundle.py holds every field to
that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meterid.decision.policy import DecisionPolicy
from meterid.files import atomic_path, write_bytes_atomic, write_text_atomic
from meterid.inference.int8 import Int8Check, Int8Graph
from meterid.inference.quality import QualityLimits
from meterid.model.backbones import build_backbone
from meterid.model.classifier import MeterClassifier, Preprocessing

BUNDLE_FORMAT = 1  # raise it when a change cannot be read with defaults; readers name it
CARD_FILE, WEIGHTS_FILE, INT8_FILE = "bundle.json", "weights.pt", "int8.onnx"


class BundleFormatError(ValueError):
    """A folder that is not a bundle this meterid can read, and why."""


class Network(BaseModel):
    """What rebuilds the network before its weights load."""

    model_config = ConfigDict(frozen=True)

    backbone: str
    unfreeze: str  # where the stem ends: part of the weights' names
    classes: list[str]
    preprocessing: Preprocessing
    grayscale_head: bool = False
    temperature: float = 1.0  # also in the weights; here so a person reads it in bundle.json

    @classmethod
    def of(cls, model: MeterClassifier) -> Network:
        return cls(backbone=model.backbone_name, unfreeze=model.unfreeze,
                   classes=list(model.classes), preprocessing=model.preprocessing,
                   grayscale_head=model.gray_head is not None,
                   temperature=float(model.temperature))

    def build(self, weights: dict[str, torch.Tensor]) -> MeterClassifier:
        model = MeterClassifier(build_backbone(self.backbone, "none", self.unfreeze), self.classes)
        if self.grayscale_head:
            model.with_grayscale_head()
        for name in ("reference_embeddings", "reference_labels"):  # sized by the training set
            setattr(model, name, torch.empty_like(weights[name]))
        model.load_state_dict(weights)
        model.preprocessing = self.preprocessing
        return model.eval()


class BundleCard(BaseModel):
    """Everything in a bundle but the tensors and the int8 graph's bytes (``bundle.json``)."""

    # Infinity (a rule that never accepts) is written as the string "Infinity": strict JSON.
    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    format: int = BUNDLE_FORMAT
    network: Network
    # Set by ``meterid evaluate`` on held-out photos; untested: nothing auto-accepted.
    policy: DecisionPolicy = Field(default_factory=DecisionPolicy.untested)
    # Derived from the training photos; None: the params' generic limits.
    quality_limits: QualityLimits | None = None
    int8_check: Int8Check | None = None  # present exactly when int8.onnx is


@dataclass(frozen=True)
class ModelBundle:
    """A classifier ready for inference with its card; ``source`` and ``version`` say where it
    was read from (a folder, a registry URI with its version), not what it is."""

    model: MeterClassifier
    card: BundleCard
    int8_onnx: bytes | None = None
    source: str = ""
    version: int | None = None

    @classmethod
    def of(cls, model: MeterClassifier, **card: Any) -> ModelBundle:
        """A new bundle of ``model`` (``card``: the card's other fields)."""
        return cls(model, BundleCard(network=Network.of(model), **card))

    @property
    def classes(self) -> list[str]:
        return self.card.network.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.card.network.preprocessing

    @property
    def policy(self) -> DecisionPolicy:
        return self.card.policy

    @property
    def quality_limits(self) -> QualityLimits | None:
        return self.card.quality_limits

    @property
    def int8(self) -> Int8Graph | None:
        check = self.card.int8_check
        return None if self.int8_onnx is None or check is None else Int8Graph(self.int8_onnx, check)

    def with_card(self, **changes: Any) -> ModelBundle:
        """This bundle with some of its card's fields changed."""
        return replace(self, card=self.card.model_copy(update=changes))

    def with_policy(self, policy: DecisionPolicy, int8: Int8Graph | None) -> ModelBundle:
        """The evaluated bundle: its decision policy and int8 graph (None: fp32 only)."""
        evaluated = self.with_card(policy=policy, int8_check=None if int8 is None else int8.check)
        return replace(evaluated, int8_onnx=None if int8 is None else int8.onnx)


def write_bundle(bundle: ModelBundle, folder: Path) -> Path:
    """Write ``bundle`` into ``folder`` (its bundle files replaced; other files kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    card = bundle.card.model_copy(update={"network": Network.of(model)})  # the weights' truth
    weights = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        torch.save(weights, tmp)
    if bundle.int8_onnx is not None:
        write_bytes_atomic(folder / INT8_FILE, bundle.int8_onnx)
    else:
        (folder / INT8_FILE).unlink(missing_ok=True)
    write_text_atomic(folder / CARD_FILE, card.model_dump_json(indent=2) + "\n")  # last: complete
    return folder


def read_bundle(folder: Path, source: str | None = None, version: int | None = None
                ) -> ModelBundle:
    """The bundle in ``folder``; a clear ``BundleFormatError`` for anything else."""
    card = read_card(folder)
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        raise BundleFormatError(f"{folder} has a {CARD_FILE} but no {WEIGHTS_FILE}")
    weights = torch.load(weights_file, map_location="cpu", weights_only=True)
    model = card.network.build(weights)
    int8_file = folder / INT8_FILE
    if card.int8_check is not None and not int8_file.is_file():
        raise BundleFormatError(f"{folder}: {CARD_FILE} records an int8 check but there is no "
                                f"{INT8_FILE}")
    onnx = int8_file.read_bytes() if card.int8_check is not None else None
    return ModelBundle(model, card, onnx, source if source is not None else str(folder), version)


def read_card(folder: Path) -> BundleCard:
    card_file = folder / CARD_FILE
    if not card_file.is_file():
        older = " (an MLflow model logged by meterid before bundle format 1, as a pickle)" \
            if (folder / "data" / "model.pth").is_file() else ""
        raise BundleFormatError(f"{folder} is not a meterid model bundle: no {CARD_FILE}{older}; "
                                "train and evaluate a new version")
    data = json.loads(card_file.read_text())
    written = data.get("format") if isinstance(data, dict) else None
    if not isinstance(written, int) or written > BUNDLE_FORMAT:
        raise BundleFormatError(f"{card_file} is bundle format {written!r}; this meterid reads "
                                f"formats 1 to {BUNDLE_FORMAT}: upgrade meterid")
    try:
        return BundleCard.model_validate(data)
    except ValidationError as error:
        raise BundleFormatError(f"{card_file} (bundle format {written}) does not read: "
                                f"{error}") from error
