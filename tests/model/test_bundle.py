"""The model bundle: one folder, written and read by one pair of functions, that gives back the
same network, card and int8 graph; older bundles read back with defaults, others are named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from meterid.decision.conformal import AcceptRule, PredictionSetRule
from meterid.decision.openset import OpenSetRule
from meterid.decision.policy import DecisionPolicy
from meterid.inference.bundle import (
    CARD_FILE,
    INT8_FILE,
    BundleCard,
    BundleFormatError,
    ModelBundle,
    read_bundle,
    write_bundle,
)
from meterid.inference.int8 import Int8Check, Int8Graph, sha256_of
from meterid.inference.quality import DERIVED, QualityLimits
from meterid.model.backbones import build_backbone
from meterid.model.classifier import MeterClassifier, Preprocessing

SIZE = 48
POLICY = DecisionPolicy(OpenSetRule("knn", -0.2, 3, "test"),
                        AcceptRule(math.inf, 0.02, 0.1, False, 0.3, math.inf, 20),
                        PredictionSetRule(0.1, math.inf, 20))
LIMITS = QualityLimits(0.1, 0.95, 0.05, 10.0, 0.88, DERIVED, 12, 0.0, {"any": 0.25})


@pytest.fixture
def model() -> MeterClassifier:
    torch.manual_seed(0)
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none"), ["a", "b", "c"])
    model.preprocessing = Preprocessing(SIZE, model.preprocessing.mean, model.preprocessing.std)
    model.temperature.fill_(1.5)
    model.reference_embeddings = torch.randn(5, model.embedding_dim)
    model.reference_labels = torch.tensor([0, 1, 2, 0, 1])
    return model.eval()


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_a_bundle_reads_back_as_written(model: MeterClassifier, tmp_path: Path) -> None:
    bundle = ModelBundle.of(model, policy=POLICY, quality_limits=LIMITS)
    loaded = read_bundle(write_bundle(bundle, tmp_path / "bundle"))
    images = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), model(images), atol=1e-6)
    assert loaded.card == bundle.card and loaded.policy == POLICY
    assert loaded.quality_limits == LIMITS and loaded.int8 is None
    assert loaded.classes == ["a", "b", "c"] and float(loaded.model.temperature) == 1.5
    assert loaded.preprocessing == model.preprocessing == loaded.model.preprocessing
    assert torch.equal(loaded.model.reference_embeddings, model.reference_embeddings)
    assert torch.equal(loaded.model.reference_labels, model.reference_labels)
    assert loaded.model.gray_head is None and not loaded.model.training
    assert loaded.source == str(tmp_path / "bundle") and loaded.version is None
    card = _strict_json((tmp_path / "bundle" / CARD_FILE).read_text())  # Infinity as a string
    assert card["format"] == 1 and card["policy"]["accept"]["threshold"] == "Infinity"


def test_the_card_describes_the_weights_it_is_written_with(model: MeterClassifier,
                                                           tmp_path: Path) -> None:
    bundle = ModelBundle.of(model)
    model.temperature.fill_(2.5)  # changed after the card was made
    assert read_bundle(write_bundle(bundle, tmp_path)).card.network.temperature == 2.5


def test_a_grayscale_head_survives_the_bundle(model: MeterClassifier, tmp_path: Path) -> None:
    head = model.with_grayscale_head()
    with torch.no_grad():
        head[1].weight.normal_()
    loaded = read_bundle(write_bundle(ModelBundle.of(model), tmp_path)).model
    assert torch.equal(loaded.gray_head[1].weight, head[1].weight)
    embeddings = torch.randn(3, model.embedding_dim).numpy()
    logits = np.zeros((3, 3), dtype=np.float32)
    routed = loaded.route_grayscale(logits, embeddings, np.array([False, True, False]))
    with torch.no_grad():
        expected = head.eval()(torch.from_numpy(embeddings[1:2])).numpy()
    assert np.allclose(routed[1:2], expected, atol=1e-6)
    assert not routed[[0, 2]].any() and not logits.any()  # the input is left as it was


def test_the_int8_graph_travels_and_an_fp32_rewrite_removes_it(model: MeterClassifier,
                                                               tmp_path: Path) -> None:
    onnx = b"an int8 graph"
    check = Int8Check("u8s8", 8, 8, 1.0, 1.0, 0.9, 0.9, 0.97, sha256_of(onnx))
    evaluated = ModelBundle.of(model).with_policy(POLICY, Int8Graph(onnx, check))
    assert read_bundle(write_bundle(evaluated, tmp_path)).int8 == Int8Graph(onnx, check)
    write_bundle(evaluated.with_policy(POLICY, None), tmp_path)
    assert not (tmp_path / INT8_FILE).exists() and read_bundle(tmp_path).int8 is None


@pytest.mark.parametrize("field", [name for name, info in BundleCard.model_fields.items()
                                   if not info.is_required()])
def test_a_bundle_written_before_a_field_reads_back_with_its_default(
        model: MeterClassifier, tmp_path: Path, field: str) -> None:
    """So adding a field to BundleCard (with a default) is the whole change."""
    write_bundle(ModelBundle.of(model, policy=POLICY, quality_limits=LIMITS), tmp_path)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    if field == "format":
        return  # a card without a format is refused: see below
    del card[field]
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    assert getattr(read_bundle(tmp_path).card, field) == BundleCard.model_fields[field].get_default(
        call_default_factory=True)


def test_every_card_field_but_the_network_has_a_default() -> None:
    required = [name for name, info in BundleCard.model_fields.items() if info.is_required()]
    assert required == ["network"]


def test_what_is_not_a_readable_bundle_is_named(model: MeterClassifier, tmp_path: Path) -> None:
    with pytest.raises(BundleFormatError, match=f"not a meterid model bundle: no {CARD_FILE}"):
        read_bundle(tmp_path)
    write_bundle(ModelBundle.of(model), tmp_path)
    card = json.loads((tmp_path / CARD_FILE).read_text())
    for written in (2, None):
        (tmp_path / CARD_FILE).write_text(json.dumps({**card, "format": written}))
        with pytest.raises(BundleFormatError, match=f"bundle format {written}; this meterid"):
            read_bundle(tmp_path)
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(BundleFormatError, match="no weights.pt"):
        read_bundle(tmp_path)
