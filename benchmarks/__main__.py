"""Run every benchmark: ``python -m benchmarks [name ...]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meterid.config import load_params
from meterid.stores import configure_stores

BENCHMARKS = ("difficulty_baseline", "generator_throughput", "model_throughput", "demo_budget",
              "backbone_probe", "training", "scoring", "scoring_dask", "clustering",
              "suspect_labels", "near_duplicates", "quality_limits", "scaled_decode", "small_data",
              "grayscale_branch", "real_photos", "open_set_scores", "ece_noise",
              "prediction_sets", "class_means", "int8_float_convs", "crop_geometry",
              "paired_variants", "single_group", "padding_fold", "unsure_rule",
              "another_session")


def main(names: list[str]) -> None:
    configure_stores(load_params().stores, Path.cwd(), check=False)
    logging.basicConfig(level=logging.WARNING)
    for name in names or BENCHMARKS:
        module = __import__(f"benchmarks.{name}", fromlist=["run"])
        print(f"\n=== {name} ===", flush=True)
        module.run()


if __name__ == "__main__":
    main(sys.argv[1:])
