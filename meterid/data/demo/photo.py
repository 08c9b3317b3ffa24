"""Put a rendered meter into a field-photo scene and apply the capture nuisances.

Every photo gets every nuisance, each drawn from its configured range: clutter behind the meter,
zoom/crop, rotation, perspective tilt, lighting (exposure, colour cast, shadow, glare), blur
(gaussian or motion), sensor noise; JPEG quality is applied when the photo is encoded.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from meterid.config import NuisanceConfig

WALL_COLORS = [(170, 170, 165), (205, 195, 170), (225, 225, 220), (150, 80, 60), (120, 90, 60),
               (120, 150, 130), (90, 95, 100), (190, 180, 150)]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _background(rng: np.random.Generator, size: tuple[int, int], clutter: int) -> np.ndarray:
    """A wall with low-frequency stains, grain and unrelated objects (boxes, cables, pipes)."""
    w, h = size
    base = np.array(WALL_COLORS[rng.integers(len(WALL_COLORS))], dtype=np.float32)
    stains = cv2.resize(rng.normal(1.0, 0.12, (6, 5)).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    img = base[None, None, :] * stains[..., None] + rng.normal(0, 6, (h, w, 1))
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(clutter):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        x, y = int(rng.integers(-50, w)), int(rng.integers(-50, h))
        if kind == 0:  # box: fuse box, switch, another enclosure
            bw, bh = int(rng.integers(30, 220)), int(rng.integers(30, 260))
            cv2.rectangle(img, (x, y), (x + bw, y + bh), color, -1)
            cv2.rectangle(img, (x + 6, y + 6), (x + bw // 2, y + bh // 3), (30, 30, 30), -1)
        elif kind == 1:  # cable
            pts = np.cumsum(rng.normal(0, 60, (5, 2)), axis=0) + (x, y)
            cv2.polylines(img, [pts.astype(np.int32)], False, color, int(rng.integers(3, 14)))
        elif kind == 2:  # pipe
            cv2.line(img, (x, -10), (x + int(rng.integers(-40, 40)), h + 10), color,
                     int(rng.integers(12, 40)))
        else:  # sticker, paper note
            cv2.circle(img, (x, y), int(rng.integers(10, 60)), color, -1)
    return img


def _meter_quad(
    meter_size: tuple[int, int], frame: tuple[int, int], rng: np.random.Generator,
    cfg: NuisanceConfig,
) -> np.ndarray:
    """Where the meter's corners land: zoom, off-centre, perspective tilt, then rotation."""
    mw, mh = meter_size
    fw, fh = frame
    scale = _uniform(rng, cfg.meter_height) * fh / mh
    cx = fw / 2 + rng.uniform(-1, 1) * cfg.center_jitter * fw
    cy = fh / 2 + rng.uniform(-1, 1) * cfg.center_jitter * fh
    hw, hh = mw * scale / 2, mh * scale / 2
    quad = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]], dtype=np.float32)
    tilt = _uniform(rng, cfg.tilt)
    side = int(rng.integers(4))  # which edge recedes from the camera
    near = {0: [0, 3], 1: [1, 2], 2: [0, 1], 3: [2, 3]}[side]
    axis = 1 if side < 2 else 0
    quad[near, axis] *= 1 - tilt
    angle = np.deg2rad(_uniform(rng, cfg.rotation_deg))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (quad @ rotation.T + (cx, cy)).astype(np.float32)


def _place_meter(scene: np.ndarray, meter: Image.Image, quad: np.ndarray) -> np.ndarray:
    """Warp the meter into the scene with a soft contact shadow under it."""
    rgba = np.asarray(meter)
    w, h = meter.size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, quad)
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpPerspective(rgba, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)
    alpha = warped[..., 3:4].astype(np.float32) / 255
    shadow = cv2.GaussianBlur(np.roll(alpha, (8, 6), axis=(0, 1)), (0, 0), 6)
    if shadow.ndim == 2:
        shadow = shadow[..., None]
    out = scene.astype(np.float32) * (1 - 0.45 * shadow)
    return out * (1 - alpha) + warped[..., :3].astype(np.float32) * alpha


def _lighting(img: np.ndarray, rng: np.random.Generator, cfg: NuisanceConfig) -> np.ndarray:
    """Exposure, colour cast, a soft cast shadow and specular glare."""
    h, w = img.shape[:2]
    gains = _uniform(rng, cfg.exposure) * (1 + rng.uniform(-cfg.color_cast, cfg.color_cast, 3))
    img = img * gains.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < cfg.shadow_prob:
        theta = rng.uniform(0, 2 * np.pi)
        offset = rng.uniform(-0.3, 0.3) * max(h, w)
        dist = (xx - w / 2) * np.cos(theta) + (yy - h / 2) * np.sin(theta) - offset
        softness = rng.uniform(5, 40)
        darkness = rng.uniform(0.35, 0.7)
        img = img * (1 - (1 - darkness) / (1 + np.exp(-dist / softness)))[..., None]
    if rng.random() < cfg.glare_prob:
        gx, gy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        radius = rng.uniform(15, 90)
        blob = np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2))
        img = img + rng.uniform(120, 255) * blob[..., None]
    vignette = 1 - 0.35 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    return img * vignette[..., None]


def _blur_and_noise(img: np.ndarray, rng: np.random.Generator, cfg: NuisanceConfig) -> np.ndarray:
    sigma = _uniform(rng, cfg.gaussian_blur_sigma)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < cfg.motion_blur_prob:
        length = int(rng.integers(cfg.motion_blur_px[0], cfg.motion_blur_px[1] + 1))
        kernel = np.zeros((length, length), dtype=np.float32)
        kernel[length // 2, :] = 1 / length
        rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5),
                                           rng.uniform(0, 180), 1)
        turned = cv2.warpAffine(kernel, rotation, (length, length))
        img = cv2.filter2D(img, -1, turned / max(turned.sum(), 1e-6))
    return img + rng.normal(0, _uniform(rng, cfg.noise_sigma), img.shape).astype(np.float32)


def compose_photo(
    meter: Image.Image, rng: np.random.Generator, cfg: NuisanceConfig, size: tuple[int, int]
) -> Image.Image:
    """A field-photo-like RGB image of ``size`` (width, height) showing ``meter``."""
    scene = _background(rng, size, int(rng.integers(cfg.clutter_objects[0],
                                                    cfg.clutter_objects[1] + 1)))
    img = _place_meter(scene, meter, _meter_quad(meter.size, size, rng, cfg))
    img = _blur_and_noise(_lighting(img, rng, cfg), rng, cfg)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def jpeg_quality(rng: np.random.Generator, cfg: NuisanceConfig) -> int:
    return int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
