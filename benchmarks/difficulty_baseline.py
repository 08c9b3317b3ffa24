"""How hard is the demo dataset? A logistic regression on 32x32 colour thumbnails.

Trained on the train (+val) split, scored on the test split of the default demo dataset. The
dataset is meant to need a real model: this baseline must stay under 60% test accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from meterid.config import load_params
from meterid.data.steps import folder_is_empty, split_dataset

TARGET_MAX_ACCURACY = 0.60


def thumbnails(data_dir: Path, paths: list[str], size: int = 32) -> np.ndarray:
    rows = []
    for path in paths:
        with Image.open(data_dir / path) as image:
            thumb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        rows.append(np.asarray(thumb, dtype=np.float32).ravel() / 255)
    return np.stack(rows)


def run() -> dict[str, float]:
    params = load_params()
    data_dir = params.paths.raw_dir
    if folder_is_empty(data_dir):
        raise SystemExit(f"{data_dir} is empty: run `make demo` (or `meterid data demo`) first")
    splits = split_dataset(data_dir, params.paths.manifest, params.paths.splits,
                           params.paths.split_reports, params.validate_, params.split)
    train = splits[splits["split"] != "test"]
    test = splits[splits["split"] == "test"]
    start = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(thumbnails(data_dir, train["path"].tolist()), train["label"])
    accuracy = float(np.mean(model.predict(thumbnails(data_dir, test["path"].tolist()))
                             == test["label"].to_numpy()))
    majority = float(np.mean(test["label"] == train["label"].mode()[0]))
    chance = 1 / train["label"].nunique()
    print(f"test images: {len(test)} of {test['label'].nunique()} classes; "
          f"train images: {len(train)} of {train['label'].nunique()} classes")
    print(f"logistic regression on 32x32 thumbnails: {accuracy:.1%} test accuracy "
          f"(target < {TARGET_MAX_ACCURACY:.0%}; {time.perf_counter() - start:.0f} s)")
    print(f"  vs majority class {majority:.1%} ({accuracy / max(majority, 1e-9):.1f}x), "
          f"vs chance {chance:.1%} ({accuracy / chance:.1f}x)")
    print("  PASS" if accuracy < TARGET_MAX_ACCURACY else "  FAIL: the demo data is too easy")
    return {"accuracy": accuracy, "majority": majority, "chance": chance}
