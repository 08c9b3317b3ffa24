"""Demo generator throughput: 2 worker processes vs 1, same photos, one run.

Target: the default 1,975 images in under 2 minutes on 2 cores (extrapolated from the sample and
measured in full by `meterid data demo`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from meterid.config import load_params
from meterid.data.demo.generate import generate_demo

SAMPLE_IMAGES = 200


def _images_per_second(workers: int, out: Path) -> float:
    cfg = load_params().demo.model_copy(update=dict(total_images=SAMPLE_IMAGES, workers=workers))
    start = time.perf_counter()
    generate_demo(cfg, out)
    return SAMPLE_IMAGES / (time.perf_counter() - start)


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        serial = _images_per_second(1, Path(tmp) / "one")
        parallel = _images_per_second(2, Path(tmp) / "two")
    full = load_params().demo.total_images / parallel
    print(f"1 worker: {serial:.1f} img/s; 2 workers: {parallel:.1f} img/s "
          f"({parallel / serial:.2f}x)")
    print(f"default dataset ({load_params().demo.total_images} images) at 2 workers: ~{full:.0f} s "
          f"(target < 120 s) {'PASS' if full < 120 else 'FAIL'}")
    return {"serial": serial, "parallel": parallel}
