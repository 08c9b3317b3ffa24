"""The demo generator: counts, determinism, held-out brands, photo format."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meterid.config import DemoConfig
from meterid.data.demo.catalog import build_catalog, class_counts
from meterid.data.demo.generate import generate_demo, plan_jobs


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jpg"))}


def test_default_class_sizes_are_imbalanced_like_the_reference():
    counts = class_counts(38, 1975, 50)
    assert sum(counts) == 1975 and len(counts) == 38
    assert sum(c < 10 for c in counts) >= 5
    assert sum(c > 100 for c in counts) >= 5


@pytest.mark.parametrize("n_classes,total,ratio", [(6, 100, 10), (38, 1975, 50), (10, 33, 1)])
def test_class_sizes_sum_to_the_total(n_classes: int, total: int, ratio: float):
    counts = class_counts(n_classes, total, ratio)
    assert sum(counts) == total and min(counts) >= 1
    assert counts == sorted(counts)


def test_catalog_has_families_of_similar_classes_and_distinct_held_out_brands():
    known, unknown = build_catalog(38, 8)
    assert len({s.name for s in known}) == 38
    assert len({s.signature for s in known + unknown}) == 46
    families = {s.family for s in known}
    assert all(sum(s.family == f for s in known) >= 4 for f in families)
    assert not {s.brand for s in unknown} & {s.brand for s in known}
    # Some held-out brands share a known casing (near-known), some have a new one.
    known_shapes = {s.shape for s in known}
    assert any(s.shape in known_shapes for s in unknown)
    assert any(s.shape not in known_shapes for s in unknown)


def test_plan_matches_counts_and_folders(small_demo_cfg: DemoConfig, tmp_path: Path):
    jobs = plan_jobs(small_demo_cfg, tmp_path / "raw", tmp_path / "unknown")
    known = [j for j in jobs if j.path.is_relative_to(tmp_path / "raw")]
    assert len(known) == small_demo_cfg.total_images
    assert len(jobs) - len(known) == 3 * small_demo_cfg.unknown_images_per_brand
    assert len({j.path for j in jobs}) == len(jobs)


def test_generated_dataset_layout_and_photos(small_demo: Path, small_demo_cfg: DemoConfig):
    classes = sorted(p.name for p in (small_demo / "raw").iterdir())
    assert len(classes) == small_demo_cfg.n_classes
    files = list((small_demo / "raw").rglob("*.jpg"))
    assert len(files) == small_demo_cfg.total_images
    brands = sorted(p.name for p in (small_demo / "unknown").iterdir())
    assert len(brands) == 3 and not set(brands) & set(classes)
    with Image.open(files[0]) as photo:
        assert photo.format == "JPEG" and photo.mode == "RGB"
        assert photo.size == (small_demo_cfg.image_width, small_demo_cfg.image_height)


def test_same_seed_same_bytes_other_seed_other_photos(
    small_demo: Path, small_demo_cfg: DemoConfig, tmp_path: Path
):
    cfg = small_demo_cfg.model_copy(update=dict(total_images=30, unknown_brands=1, workers=1))
    generate_demo(cfg, tmp_path / "a")
    generate_demo(cfg.model_copy(update=dict(workers=2)), tmp_path / "b")
    generate_demo(cfg.model_copy(update=dict(seed=cfg.seed + 1)), tmp_path / "c")
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert a == b  # independent of the number of workers
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_refuses_to_mix_with_existing_files_unless_overwriting(
    small_demo_cfg: DemoConfig, tmp_path: Path
):
    cfg = small_demo_cfg.model_copy(update=dict(total_images=12, workers=1))
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "old.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_demo(cfg, tmp_path / "raw")
    generate_demo(cfg, tmp_path / "raw", overwrite=True)
    assert not (tmp_path / "raw" / "old.jpg").exists()
    assert len(list((tmp_path / "raw").rglob("*.jpg"))) == 12


def test_phone_sized_photos_with_exif_orientation_decode_upright(small_demo_cfg: DemoConfig,
                                                                 tmp_path: Path):
    """720x1280 photos stored turned with Orientation 3/6/8, as phones do: the one decode path
    turns them upright (the same picture as the untagged draw), and the manifest records the
    tag."""
    from meterid.data.demo.generate import PhotoJob, draw_photo
    from meterid.photos.images import inspect_image, load_rgb

    spec = build_catalog(small_demo_cfg.n_classes, 0)[0][0]
    size, tags = (720, 1280), set()
    for index in range(12):
        plain = PhotoJob(spec, 0, index, tmp_path / f"plain_{index}.jpg")
        phone = PhotoJob(spec, 0, index, tmp_path / f"phone_{index}.jpg")
        draw_photo(plain, 7, small_demo_cfg.nuisance, size)
        draw_photo(phone, 7, small_demo_cfg.nuisance, size, exif_rotated_share=1.0)
        facts = inspect_image(phone.path, 40_000_000)
        tags.add(facts.exif_orientation)
        upright = load_rgb(phone.path, 40_000_000)
        assert upright.size == size and (facts.width, facts.height) == size
        difference = np.abs(np.asarray(upright, np.int16) - np.asarray(load_rgb(
            plain.path, 40_000_000), np.int16)).mean()
        assert difference < 3.0  # the same picture, re-encoded in another orientation
    assert tags == {3, 6, 8}
