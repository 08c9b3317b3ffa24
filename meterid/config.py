"""Typed view of ``params.yaml``: parsed once at an entry point and passed down.

The models have no defaults on purpose: ``params.yaml`` is the one place values live, and a
missing or misspelt key is an error naming the key rather than a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Range = Annotated[tuple[float, float], Field(description="[low, high]")]
IntRange = Annotated[tuple[int, int], Field(description="[low, high]")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathsConfig(_Strict):
    raw_dir: Path
    unknown_dir: Path
    manifest: Path
    splits: Path
    validation_reports: Path
    split_reports: Path
    evaluation_reports: Path
    models_dir: Path
    scoring_reports: Path
    unknown_store: Path
    embeddings: Path
    cluster_reports: Path
    cluster_state: Path
    onnx_cache: Path
    candidates_dir: Path = Path("data/candidates")  # params.yaml has it; older project files not
    review_db: Path = Path("data/review.db")  # the same
    review_photos: Path = Path("data/review_photos")  # the same


class StoresConfig(_Strict):
    """Where MLflow and Prefect keep their state (see meterid/stores.py)."""

    mlflow_tracking_uri: str
    mlflow_artifact_root: Path
    prefect_home: Path


class ServeConfig(_Strict):
    """``meterid serve``: the whole stack on one machine (see meterid/serve/)."""

    host: str
    prefect_port: int = Field(ge=1, le=65535)
    mlflow_port: int = Field(ge=1, le=65535)
    state_dir: Path
    work_pool: str
    postgres_url: str | None
    startup_timeout_s: float = Field(gt=0)


class NuisanceConfig(_Strict):
    """Capture nuisances applied to every demo photo; each range is sampled per image."""

    clutter_objects: IntRange
    meter_height: Range
    center_jitter: float
    rotation_deg: Range
    tilt: Range
    gaussian_blur_sigma: Range
    motion_blur_prob: float
    motion_blur_px: IntRange
    exposure: Range
    color_cast: float
    shadow_prob: float
    glare_prob: float
    noise_sigma: Range
    jpeg_quality: IntRange


class DemoConfig(_Strict):
    generate_if_empty: bool
    seed: int
    n_classes: int = Field(ge=2)
    total_images: int = Field(ge=2)
    imbalance_ratio: float = Field(ge=1)
    unknown_brands: int = Field(ge=0)
    unknown_images_per_brand: int = Field(ge=1)
    image_width: int = Field(ge=64)
    image_height: int = Field(ge=64)
    exif_rotated_share: float = Field(ge=0, le=1)
    workers: int = Field(ge=1)
    nuisance: NuisanceConfig


Severity = Literal["error", "warning"]


class ValidateConfig(_Strict):
    min_width: int
    min_height: int
    min_images_per_class: int
    accepted_formats: list[str]
    preferred_formats: list[str]
    severity: dict[str, Severity]
    strict: bool
    max_pixels: int
    near_duplicate_max_distance: int = Field(ge=0, le=64)
    near_duplicate_min_cosine: float | None = Field(ge=-1, le=1)
    near_duplicate_backbone: Literal["resnet18", "efficientnet_lite0", "efficientnet_lite1",
                                     "efficientnet_lite2"]
    expected_classes: list[str]
    workers: int = Field(ge=1)


class SplitConfig(_Strict):
    seed: int
    low: int = Field(ge=1)
    high: int = Field(ge=1)
    medium_test_fraction: float = Field(gt=0, lt=1)
    large_val_fraction: float = Field(gt=0, lt=1)
    large_test_fraction: float = Field(gt=0, lt=1)
    near_duplicate_max_distance: int = Field(ge=0, le=64)
    # A split given by a CSV (one row per photo) instead of the adaptive one; None: adaptive.
    # Defaults, so that a params.yaml written before these keys still parses.
    given_csv: Path | None = None
    given_column: str = Field(default="split", min_length=1)  # train | val (validation) | test
    given_path_column: str = Field(default="path", min_length=1)  # photo path, see split.py


class AugmentConfig(_Strict):
    """Train-time augmentations (torchvision v2) modelling field photos."""

    crop_scale: Range
    crop_ratio: Range  # a crop's width/height, for a photo of aspect crop_ratio_at_aspect
    # the photo width/height that crop_ratio is for; other photos' ranges scale with their own
    # (model.presets.PhotoAspectCrop). None (a params.yaml from before): one range for all
    crop_ratio_at_aspect: float | None = Field(default=None, gt=0)
    rotation_deg: float
    perspective: float
    perspective_prob: float
    brightness: float
    contrast: float
    saturation: float
    hue: float
    blur_sigma: Range
    blur_prob: float
    jpeg_quality: IntRange
    jpeg_prob: float
    grayscale_prob: float = Field(ge=0, le=1)
    text_strip_prob: float = Field(ge=0, le=1)


class PhaseConfig(_Strict):
    epochs: int = Field(ge=0)
    lr: float = Field(gt=0)
    patience: int = Field(ge=1)
    # constant: lr throughout | cosine: lr decays to 0 over `epochs`, step by step
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # > 0: the phase keeps an exponential moving average of its weights (decay per step), which
    # early stopping judges and the model keeps: a steadier result from one training
    ema_decay: float = Field(default=0.0, ge=0, lt=1)
    # false: every epoch runs and the last weights are kept (a cosine schedule's end); true:
    # stop after `patience` epochs without a better val loss and keep the best epoch's weights
    early_stopping: bool = True


class TrainConfig(_Strict):
    seed: int
    backbone: str
    weights: str
    image_size: int = Field(ge=32)  # the training views' input
    # the input the model reads whole photos at (evaluation, scoring); None: image_size. A
    # training crop shows the object larger than the whole photo at the same size (FixRes)
    eval_image_size: int | None = Field(default=None, ge=32)
    batch_size: int = Field(ge=1)
    workers: int = Field(ge=0)
    imbalance: Literal["class_weights", "weighted_sampler", "none"]
    class_weight_power: float
    feature_views: int = Field(ge=1)
    min_views_per_class: int = Field(ge=0)
    view_budget: int = Field(default=0, ge=0)  # a small collection's views a photo: see trainer
    grayscale_head_views: int = Field(ge=0)  # 0: no grayscale head
    unfreeze: Literal["last_block", "last_stage", "last_two_stages"]
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)  # of the cross-entropy targets
    # with fewer validation photos than calibration needs: the temperature, prediction sets and
    # accept bound from out-of-fold logits of the training photos, k cross-fitted models (0: off)
    out_of_fold_folds: int = Field(default=0, ge=0)
    phase1: PhaseConfig
    phase2: PhaseConfig
    device: str
    channels_last: bool
    bf16: bool
    cache_engine: Literal["onnxruntime", "torch"]  # the frozen stem's cache pass (CPU)
    freeze_batchnorm: bool
    augment: AugmentConfig

    @property
    def photo_size(self) -> int:
        """The input whole photos are read at: evaluation, calibration, scoring."""
        return self.eval_image_size or self.image_size


class Int8Config(_Strict):
    """The int8 graph made at evaluation (see meterid/inference/quantize.py)."""

    enabled: bool
    form: Literal["u8s8", "s8s8"]
    calibration_photos: int = Field(ge=1)
    min_agreement: float = Field(gt=0, le=1)  # top-1 and UNKNOWN decisions vs fp32, each
    float_convs: int = Field(default=3, ge=0)  # the first convolutions stay float32


class EvaluateConfig(_Strict):
    threshold: float = Field(ge=0, le=1)
    operating_point: Literal["known_accept_share", "fixed_confidence"]
    open_set_rule: Literal["auto", "msp", "energy", "knn", "mahalanobis"]
    knn_k: int = Field(ge=1)
    known_accept_share: float = Field(gt=0, le=1)
    max_accept_error: float = Field(gt=0, lt=1)
    accept_confidence: float = Field(gt=0, lt=1)   # 1 - delta of the certified bound
    prediction_set_alpha: float = Field(gt=0, lt=1)  # sets fitted on held-out photos
    prediction_set_alpha_out_of_fold: float = Field(gt=0, lt=1)  # on out-of-fold training photos
    non_meter_scenes: int = Field(ge=0)
    suspect_filter: Literal["prune_by_noise_rate", "confident_learning", "both",
                            "predicted_neq_given"]
    cv_folds: int = Field(ge=2)
    int8: Int8Config

    def set_alpha(self, out_of_fold: bool) -> float:
        """The miscoverage the prediction sets are asked for, by the photos they are fitted on:
        out-of-fold training photos share shelves and sessions with the other training photos,
        so they are easier than new photos and get the smaller alpha."""
        return self.prediction_set_alpha_out_of_fold if out_of_fold else self.prediction_set_alpha


class RegisterConfig(_Strict):
    auto_promote: bool
    promote_metric: str
    promote_margin: float


class FetchConfig(_Strict):
    """What scoring may download, and how long it may wait (see meterid/inference/fetch.py)."""

    connect_timeout_s: float = Field(gt=0)
    read_timeout_s: float = Field(gt=0)
    total_timeout_s: float = Field(gt=0)
    max_bytes: int = Field(ge=1)
    max_redirects: int = Field(ge=0)
    retries: int = Field(ge=0)
    backoff_s: float = Field(ge=0)
    allowed_content_types: list[str]
    deny_networks: list[str]
    allow_networks: list[str]
    allow_local_paths: bool


class QualityBounds(_Strict):
    """Limits beyond which a photo is POOR_QUALITY (measures: meterid/inference/quality.py)."""

    min_brightness: float = Field(ge=0, le=1)
    max_brightness: float = Field(ge=0, le=1)
    min_contrast: float = Field(ge=0, le=1)
    min_sharpness: float = Field(ge=0)
    max_glare: float = Field(ge=0, le=1)


class QualityConfig(QualityBounds):
    """The generic limits, used as they are by a model without limits derived from its training
    photos; a collection can loosen them up to ``outer`` (``quality.derive_limits``). A generic
    limit set looser than its outer bound (0: that check off) is kept as it is."""

    outer: QualityBounds



class MonitorConfig(_Strict):
    experiment: str
    trailing_runs: int = Field(ge=1)
    min_trailing_runs: int = Field(ge=1)
    max_unknown_share_change: float = Field(gt=0)
    max_confidence_change: float = Field(gt=0)


class ScoreConfig(_Strict):
    model: str
    engine: Literal["onnxruntime-int8", "onnxruntime", "torch"]
    batch_size: int = Field(ge=1)
    concurrency: int = Field(ge=1)
    checkpoint_rows: int = Field(ge=1)
    # Scaled out (batch_scoring's scale_out "dask..."): one Dask task per shard of this many rows,
    # a few hundred; one task per image would swamp Prefect with thousands of tiny task runs.
    shard_rows: int = Field(ge=1)
    dask_workers: int = Field(ge=1)  # scale_out "dask": local worker processes (1 thread each)
    write_csv: bool
    store_unknown: bool
    fetch: FetchConfig
    quality: QualityConfig
    monitor: MonitorConfig


class ClusterConfig(_Strict):
    since_days: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    reduction: Literal["pca", "none"]
    pca_components: int = Field(ge=2)
    min_cluster_size: int = Field(ge=2)
    min_cluster_share: float = Field(ge=0, lt=1)
    max_min_cluster_size: int = Field(ge=2)
    min_samples: int = Field(ge=1)
    selection_method: Literal["eom", "leaf"]
    # absent from a project's params.yaml written before it: HDBSCAN alone, as then
    single_group: bool = False
    match_min_similarity: float = Field(gt=0, le=1)
    sheet_images: int = Field(ge=1)
    thumb_px: int = Field(ge=16)
    experiment: str


class ReviewConfig(_Strict):
    store: str | None = None  # a SQLAlchemy URL; None: SQLite at paths.review_db
    audit_share: float = Field(ge=0, le=1)
    audit_min: int = Field(ge=0)
    audit_window: int = Field(ge=1)


class Params(_Strict):
    paths: PathsConfig
    stores: StoresConfig
    serve: ServeConfig
    demo: DemoConfig
    validate_: ValidateConfig = Field(alias="validate")
    split: SplitConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    register_: RegisterConfig = Field(alias="register")
    score: ScoreConfig
    cluster: ClusterConfig
    # params.yaml has it; older project files not: they get the same values
    review: ReviewConfig = Field(default_factory=lambda: ReviewConfig(
        audit_share=0.02, audit_min=5, audit_window=500))


class ConfigError(ValueError):
    """params.yaml is missing or does not match the expected schema."""


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and check ``params.yaml``; errors name the file and the offending keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such parameters file; run from the project root or pass --params"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Params.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as error:
        raise ConfigError(f"{path}: invalid parameters:\n{error}") from error
