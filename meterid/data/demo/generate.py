"""Write the demo dataset: ImageFolder JPEGs, in parallel, deterministic for a seed.

Each photo has its own random stream, seeded by (seed, class index, image index), so the output
does not depend on the number of workers or the order in which they finish.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image

from meterid.config import DemoConfig, NuisanceConfig
from meterid.data.demo.catalog import CATALOG_SEED, MeterSpec, build_catalog, class_counts
from meterid.data.demo.photo import compose_photo, jpeg_quality
from meterid.data.demo.render import render_meter
from meterid.progress import progress

log = logging.getLogger(__name__)

UNKNOWN_STREAM = 1_000  # offsets held-out brands' seeds away from the known classes'


@dataclass(frozen=True)
class PhotoJob:
    spec: MeterSpec
    stream: int  # class index, offset for held-out brands
    index: int
    path: Path


def plan_jobs(cfg: DemoConfig, out_dir: Path, unknown_dir: Path | None) -> list[PhotoJob]:
    """Every photo to draw. Class sizes are shuffled with the catalog seed, so which classes are
    rare is fixed, not a property of the data seed."""
    known, unknown = build_catalog(cfg.n_classes, cfg.unknown_brands if unknown_dir else 0)
    counts = class_counts(cfg.n_classes, cfg.total_images, cfg.imbalance_ratio)
    counts = [counts[i] for i in np.random.default_rng(CATALOG_SEED).permutation(len(counts))]
    jobs = [PhotoJob(spec, c, i, out_dir / spec.name / f"{spec.name}_{i:04d}.jpg")
            for c, (spec, n) in enumerate(zip(known, counts, strict=True)) for i in range(n)]
    if unknown_dir is not None:
        jobs += [PhotoJob(spec, UNKNOWN_STREAM + u, i,
                          unknown_dir / spec.name / f"{spec.name}_{i:04d}.jpg")
                 for u, spec in enumerate(unknown) for i in range(cfg.unknown_images_per_brand)]
    return jobs


# A phone stores the sensor's pixels and an EXIF Orientation tag telling viewers how to turn
# them upright: tag -> how the stored pixels are turned from the upright photo.
STORED_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
             8: Image.Transpose.ROTATE_270}
ORIENTATION_TAG = 0x0112


def draw_photo(job: PhotoJob, seed: int, nuisance: NuisanceConfig, size: tuple[int, int],
               exif_rotated_share: float = 0.0) -> str:
    rng = np.random.default_rng([seed, job.stream, job.index])
    photo = compose_photo(render_meter(job.spec, rng), rng, nuisance, size)
    quality = jpeg_quality(rng, nuisance)
    extra = {}
    # Drawn last and only when asked for: the default photos stay byte-identical.
    if exif_rotated_share > 0 and rng.random() < exif_rotated_share:
        orientation = int(rng.choice(list(STORED_AS)))
        photo = photo.transpose(STORED_AS[orientation])
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        extra["exif"] = exif
    photo.save(job.path, "JPEG", quality=quality, **extra)
    return job.spec.name


def _draw(args: tuple[PhotoJob, int, NuisanceConfig, tuple[int, int], float]) -> str:
    return draw_photo(*args)


def _prepare_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{path} is not empty; pass overwrite to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def generate_demo(
    cfg: DemoConfig, out_dir: Path, unknown_dir: Path | None = None, overwrite: bool = False
) -> dict[str, int]:
    """Generate the dataset (and held-out brands); returns images per folder name."""
    jobs = plan_jobs(cfg, out_dir, unknown_dir)
    for directory in filter(None, (out_dir, unknown_dir)):
        _prepare_dir(directory, overwrite)
    for folder in {job.path.parent for job in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    size = (cfg.image_width, cfg.image_height)
    log.info("drawing %d demo photos with %d workers", len(jobs), cfg.workers)
    work = [(job, cfg.seed, cfg.nuisance, size, cfg.exif_rotated_share) for job in jobs]
    counts: dict[str, int] = {}
    # spawn, not fork: callers (Prefect, tests) run threads that a fork would copy mid-state.
    with ProcessPoolExecutor(cfg.workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_draw, work, chunksize=16)
        for name in progress(done, "demo photos", "img", total=len(work)):
            counts[name] = counts.get(name, 0) + 1
    return counts
