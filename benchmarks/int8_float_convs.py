"""The int8 graph with its first convolutions left float32 (``evaluate.int8.float_convs``):
agreement with fp32 on the test photos under the model's own decision policy (what the
evaluation's check measures), and its speed beside fp32, timed in turns in one run.

Uses the exported champion (``models/champion``) and the split it was trained on: run it after
``make demo``, or in a user's project after ``meterid flow train``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from meterid.config import load_params
from meterid.data.split import read_splits
from meterid.evaluation.steps import int8_inputs
from meterid.inference.engines import OnnxEngine, engine_threads, export_onnx
from meterid.registry import load_classifier

FLOAT_CONVS = (0, 1, 3, 6)
TURNS = 3  # each engine timed this many times, in turns; the fastest pass is kept


def _fastest_pass(engine: OnnxEngine, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for batch in batches:
        engine(torch.from_numpy(batch))
    return time.perf_counter() - start


def run() -> pd.DataFrame | None:
    params = load_params()
    champion = params.paths.models_dir / "champion"
    if not champion.is_dir() or not params.paths.splits.is_file():
        print(f"no champion at {champion} or no split (make demo first): skipped")
        return None
    bundle = load_classifier(str(champion))
    inputs = int8_inputs(bundle.model, bundle.policy, read_splits(params.paths.splits), params)
    if inputs is None:
        print("no test photos to check an int8 graph on: skipped")
        return None
    threads = engine_threads()
    with tempfile.TemporaryDirectory(prefix="meterid-int8-") as tmp:
        fp32 = OnnxEngine(export_onnx(bundle.model, Path(tmp) / "fp32.onnx",
                                      bundle.preprocessing.image_size), threads)
        graphs = {n: inputs.graph(params.evaluate.int8.model_copy(update={"float_convs": n}))
                  for n in FLOAT_CONVS}
        engines = {n: OnnxEngine(graph.onnx, threads) for n, graph in graphs.items()}
        times: dict[object, float] = {}
        for _ in range(TURNS):
            for name, engine in [("fp32", fp32), *engines.items()]:
                seconds = _fastest_pass(engine, inputs.check)
                times[name] = min(times.get(name, seconds), seconds)
    rows = pd.DataFrame([{"float_convs": n, **{k: getattr(g.check, k) for k in (
        "top1_agreement", "unknown_agreement", "accuracy_int8", "accuracy_fp32")},
        "passed": g.check.passed, "speed_vs_fp32": times["fp32"] / times[n]}
        for n, g in graphs.items()])
    photos = len(inputs.check_targets)
    print(f"{bundle.source}: {photos} test photos, {len(inputs.calibration_paths)} calibration "
          f"photos, {bundle.preprocessing.image_size} px, {threads} thread(s)")
    print(rows.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return rows


if __name__ == "__main__":
    run()
