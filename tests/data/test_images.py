"""Safe image inspection and loading: every bad file kind is a recorded error, never a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from meterid.photos.images import ImageError, ImageFacts, inspect_image, load_rgb, rgb_from_bytes
from tests.data.conftest import (
    exif_rotated_jpeg,
    html_named_jpg,
    noise_image,
    png_claiming,
    save,
    sixteen_bit_png,
    truncated_jpeg,
)

LIMIT = 1_000_000


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


BAD_FILES = {
    "truncated": (lambda p: truncated_jpeg(p / "cut.jpg"), "truncated or corrupt image data: "),
    "empty": (lambda p: _empty(p / "empty.jpg"), "empty file"),
    "html": (lambda p: html_named_jpg(p / "page.jpg"), "not an image (cannot identify image file"),
    "bomb_header": (lambda p: png_claiming(p / "bomb.png", 9000, 9000),
                    f"decompression bomb: 9000x9000 = 81000000 pixels > limit {LIMIT}"),
    "missing": (lambda p: p / "nowhere.jpg", "cannot read file: No such file or directory"),
}


def test_a_good_jpeg_is_described_fully(tmp_path: Path):
    path = save(noise_image(0, (64, 48)), tmp_path / "ok.jpg", "JPEG")

    facts = inspect_image(path, LIMIT)

    assert facts.error is None and facts.rgb_convertible
    assert (facts.width, facts.height, facts.mode, facts.format) == (64, 48, "RGB", "JPEG")
    assert facts.bytes == path.stat().st_size
    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert facts.phash is not None and len(facts.phash) == 16 and int(facts.phash, 16) >= 0
    assert facts.exif_orientation is None


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_are_recorded_not_raised(tmp_path: Path, kind: str):
    make, message = BAD_FILES[kind]
    path = make(tmp_path)

    facts = inspect_image(path, LIMIT)

    assert isinstance(facts, ImageFacts)
    assert facts.error is not None and facts.error.startswith(message), facts.error
    assert not facts.rgb_convertible and facts.phash is None


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_load_rgb_names_the_path_and_the_cause(tmp_path: Path, kind: str):
    make, message = BAD_FILES[kind]
    path = make(tmp_path)

    with pytest.raises(ImageError) as raised:
        load_rgb(path, LIMIT)

    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"{path}: {message}"), str(raised.value)


def test_truncated_file_keeps_its_header_facts_and_digest(tmp_path: Path):
    path = truncated_jpeg(tmp_path / "cut.jpg")

    facts = inspect_image(path, LIMIT)

    assert (facts.width, facts.height, facts.format) == (200, 150, "JPEG")
    assert facts.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_html_error_page_is_named_as_text(tmp_path: Path):
    facts = inspect_image(html_named_jpg(tmp_path / "photo.jpg"), LIMIT)

    assert facts.error is not None and "starts with '<!doctype html>" in facts.error


def test_a_real_oversized_image_is_refused_before_decoding(tmp_path: Path, monkeypatch):
    path = save(Image.new("1", (2000, 1000)), tmp_path / "big.png", "PNG")
    decoded: list[str] = []
    original_load = Image.Image.load

    def load(self: Image.Image) -> object:
        decoded.append(self.mode)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", load)

    facts = inspect_image(path, LIMIT)

    assert facts.error == f"decompression bomb: 2000x1000 = 2000000 pixels > limit {LIMIT}"
    assert (facts.width, facts.height, facts.format) == (2000, 1000, "PNG")
    assert decoded == []
    with pytest.raises(ImageError, match="decompression bomb"):
        load_rgb(path, LIMIT)
    assert inspect_image(path, 2_000_000).error is None


def test_pillow_bomb_error_and_warning_are_recorded(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    huge = save(Image.new("L", (100, 100)), tmp_path / "huge.png", "PNG")  # > 2x: Pillow raises
    large = save(Image.new("L", (40, 40)), tmp_path / "large.png", "PNG")  # > 1x: Pillow warns

    assert inspect_image(huge, 10**9).error == "decompression bomb: 10000 pixels > limit 1000"
    with pytest.warns(Image.DecompressionBombWarning):
        facts = inspect_image(large, 10**9)
    assert facts.error == "decompression bomb: 40x40 = 1600 pixels > limit 1000"


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path):
    path = save(noise_image(3, mode="CMYK"), tmp_path / "cmyk.jpg", "JPEG")

    facts = inspect_image(path, LIMIT)
    image = load_rgb(path, LIMIT)

    assert facts.mode == "CMYK" and facts.rgb_convertible and facts.error is None
    assert image.mode == "RGB" and image.size == (64, 48)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path):
    path = sixteen_bit_png(tmp_path / "deep.png")

    facts = inspect_image(path, LIMIT)
    pixels = np.asarray(load_rgb(path, LIMIT))

    assert facts.mode.startswith("I") and facts.rgb_convertible and facts.error is None
    assert pixels.shape == (40, 60, 3) and pixels.dtype == np.uint8
    assert (pixels[:, :30] == 255).all() and (pixels[:, 30:] == 128).all()


def test_palette_png_with_transparency_composites_onto_white(tmp_path: Path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    opaque = save(image, tmp_path / "palette.png", "PNG")
    see_through = save(image, tmp_path / "palette_t.png", "PNG", transparency=1)

    plain = np.asarray(load_rgb(opaque, LIMIT))
    composited = np.asarray(load_rgb(see_through, LIMIT))

    assert inspect_image(see_through, LIMIT).mode == "P"
    assert tuple(plain[0, 0]) == (0, 0, 255) and tuple(plain[0, 7]) == (255, 0, 0)
    assert tuple(composited[0, 0]) == (255, 255, 255) and tuple(composited[0, 7]) == (255, 0, 0)


def test_rgba_png_composites_onto_white(tmp_path: Path):
    image = Image.new("RGBA", (4, 2), (0, 200, 0, 255))
    image.putpixel((3, 1), (10, 20, 30, 0))
    path = save(image, tmp_path / "rgba.png", "PNG")

    pixels = np.asarray(load_rgb(path, LIMIT))

    assert inspect_image(path, LIMIT).mode == "RGBA"
    assert tuple(pixels[0, 0]) == (0, 200, 0) and tuple(pixels[1, 3]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path: Path):
    path = exif_rotated_jpeg(tmp_path / "rotated.jpg", orientation=6)
    upright = noise_image(2, (300, 200)).transpose(Image.Transpose.ROTATE_270)
    upright_path = save(upright, tmp_path / "upright.png", "PNG")

    facts = inspect_image(path, LIMIT)
    image = load_rgb(path, LIMIT)

    assert (facts.width, facts.height, facts.exif_orientation) == (200, 300, 6)
    assert image.size == (200, 300)
    distance = bin(int(facts.phash, 16) ^ int(inspect_image(upright_path, LIMIT).phash, 16))
    assert distance.count("1") <= 4


def _phone_photo(size: tuple[int, int]) -> Image.Image:
    """An upright photo whose top-left quarter is red, on a smooth grey gradient."""
    width, height = size
    ramp = np.linspace(60, 200, width, dtype=np.float32)[None, :].repeat(height, 0)
    pixels = np.stack([ramp] * 3, axis=-1).astype(np.uint8)
    pixels[: height // 2, : width // 2] = (220, 30, 30)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("size", "scaled"), [((720, 1280), (360, 640)),
                                              ((1000, 1333), (250, 334)),
                                              ((300, 400), (300, 400))])
def test_the_models_decode_scales_a_rotated_phone_jpeg_and_turns_it_upright(
        tmp_path: Path, size: tuple[int, int], scaled: tuple[int, int]):
    """Stored turned with EXIF orientation 6, as phones do: the scaled decode keeps both sides
    >= 224 (1/2 for 720x1280, 1/4 for 1000x1333, none under 448), then turns the photo upright,
    and differs from the full decode resized by less than JPEG noise."""
    upright = _phone_photo(size)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(upright.transpose(Image.Transpose.ROTATE_90), tmp_path / "phone.jpg", "JPEG",
                exif=exif.tobytes(), quality=92)

    full, reduced = load_rgb(path, 10**8), load_rgb(path, 10**8, min_side=224)
    assert full.size == size and reduced.size == scaled
    red, grey = reduced.getpixel((5, 5)), reduced.getpixel((scaled[0] - 5, 5))
    assert red[0] > 180 and red[1] < 80 and grey[1] > 150  # red stays top-left: upright
    as_input = [np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
                for im in (full, reduced)]
    assert np.abs(as_input[0] - as_input[1]).mean() < 3
    assert rgb_from_bytes(path.read_bytes(), 10**8, 224).size == scaled


def test_scaled_decode_leaves_formats_without_dct_scaling_whole(tmp_path: Path):
    path = save(_phone_photo((720, 1280)), tmp_path / "phone.png", "PNG")
    assert load_rgb(path, 10**8, min_side=224).size == (720, 1280)


def test_bomb_size_is_reported_after_rotation(tmp_path: Path):
    exif = Image.Exif()
    exif[0x0112] = 8
    path = save(Image.new("L", (1500, 700)), tmp_path / "big.jpg", "JPEG", exif=exif.tobytes())

    facts = inspect_image(path, LIMIT)

    assert facts.error is not None and facts.error.startswith("decompression bomb: 1500x700")
    assert (facts.width, facts.height, facts.exif_orientation) == (700, 1500, 8)


def test_unconvertible_mode_is_flagged_without_an_error(tmp_path: Path, monkeypatch):
    from meterid.photos import images

    def refuse(image: Image.Image) -> Image.Image:
        raise ImageError(f"cannot convert mode {image.mode} to RGB: simulated")

    monkeypatch.setattr(images, "to_rgb", refuse)
    facts = inspect_image(save(noise_image(4), tmp_path / "x.png", "PNG"), LIMIT)

    assert facts.error is None and not facts.rgb_convertible and facts.phash is None
    assert (facts.width, facts.height, facts.mode) == (64, 48, "RGB")
