"""ONNX Runtime must give the same predictions as PyTorch, from a cached export; its int8 graph
runs only after a check that passed on those bytes."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from meterid.inference.engines import OnnxEngine, TorchEngine, build_engine, max_difference
from meterid.inference.predictor import Predictor


def test_onnx_engine_matches_torch_and_reuses_its_export(tiny_model, tmp_path: Path,
                                                         one_thread):
    engine = build_engine(tiny_model.model, "onnxruntime", tmp_path, 64)
    assert isinstance(engine, OnnxEngine)
    exported = list(tmp_path.glob("*.onnx"))
    assert len(exported) == 1
    batch = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert max_difference(engine, TorchEngine(tiny_model.model), batch) < 1e-3
    stamp = exported[0].stat().st_mtime_ns
    build_engine(tiny_model.model, "onnxruntime", tmp_path, 64)
    assert exported[0].stat().st_mtime_ns == stamp  # same weights: no second export

    onnx, eager = Predictor(tiny_model, None, "onnxruntime", tmp_path), Predictor(tiny_model)
    assert [p.top_labels for p in onnx.predict(batch)] == [p.top_labels for p in
                                                           eager.predict(batch)]
    assert onnx.embed(batch).shape == (5, tiny_model.model.embedding_dim)


def test_changed_weights_get_their_own_export(tiny_model, tmp_path: Path, one_thread):
    import copy

    build_engine(tiny_model.model, "onnxruntime", tmp_path, 64)
    changed = copy.deepcopy(tiny_model.model)
    with torch.no_grad():
        changed.head[1].bias.add_(1.0)
    build_engine(changed, "onnxruntime", tmp_path, 64)
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_an_export_that_disagrees_with_torch_is_not_used(tiny_model, tmp_path: Path,
                                                         monkeypatch, one_thread):
    from meterid.inference import engines

    monkeypatch.setattr(engines, "TOLERANCE", -1.0)  # no export can agree this well
    assert isinstance(build_engine(tiny_model.model, "onnxruntime", tmp_path, 64), TorchEngine)


def _batches(seed: int, n: int, size: int = 64) -> list[np.ndarray]:
    """Meter-like photos through the eval preset: structure, not noise, as calibration sees."""
    from meterid.model.presets import eval_preset
    from tests.scoring.conftest import meter_like

    preset = eval_preset(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    images = [preset(meter_like(96, 120, seed=seed + i)) for i in range(n)]
    return [torch.stack(images[i:i + 8]).numpy() for i in range(0, n, 8)]


def _top1_and_unknown(logits: np.ndarray, embeddings: np.ndarray) -> tuple[np.ndarray, ...]:
    return logits.argmax(axis=1), logits.max(axis=1) < 0.0


@pytest.fixture(scope="module")
def int8_graph(tiny_model):
    from meterid.inference.quantize import make_int8_graph

    check = _batches(100, 24)
    targets = np.zeros(24, dtype=int)
    return make_int8_graph(tiny_model.model, _batches(0, 32), check, targets, _top1_and_unknown,
                           "u8s8", min_agreement=0.5), check


def test_the_int8_check_measures_real_agreement_and_passes_into_use(int8_graph, tiny_model,
                                                                   tmp_path: Path, one_thread):
    graph, check = int8_graph
    fp32 = build_engine(tiny_model.model, "onnxruntime", tmp_path, 64)
    int8 = build_engine(tiny_model.model, "onnxruntime-int8", tmp_path, 64, graph)
    assert int8.name == "onnxruntime-int8" and graph.check.passed
    assert graph.check.calibration_photos == 32 and graph.check.check_photos == 24
    top1 = [np.concatenate([engine(torch.from_numpy(b))[0] for b in check]).argmax(axis=1)
            for engine in (fp32, int8)]
    assert graph.check.top1_agreement == pytest.approx(np.mean(top1[0] == top1[1]))
    assert graph.check.top1_agreement > 0.8  # a real quantization, not noise
    options = int8.session.get_session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == 1
    # idle threads sleep rather than spin: the decode threads share these cores
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("fault", ["failed check", "other bytes", "no graph"])
def test_an_unusable_int8_graph_falls_back_to_fp32_naming_why(int8_graph, tiny_model, fault,
                                                              tmp_path: Path, caplog,
                                                              one_thread):
    from meterid.inference.int8 import Int8Graph

    graph, _ = int8_graph
    broken = {"failed check": Int8Graph(graph.onnx, dataclasses.replace(
                  graph.check, top1_agreement=0.4)),
              "other bytes": Int8Graph(graph.onnx + b"\0", graph.check),
              "no graph": None}[fault]
    engine = build_engine(tiny_model.model, "onnxruntime-int8", tmp_path, 64, broken)
    assert isinstance(engine, OnnxEngine) and engine.name == "onnxruntime"
    why = {"failed check": "int8 agreed with fp32 on 40.0% of top-1 labels",
           "other bytes": "the int8 graph is not the one its check was made on",
           "no graph": "the model bundle has no int8 graph"}[fault]
    assert f"not using the int8 engine: {why}" in caplog.text


def test_engine_threads_never_exceed_the_usable_cores(monkeypatch):
    from meterid.inference import engines

    monkeypatch.setattr(engines, "usable_cores", lambda: 2)
    with_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        assert engines.engine_threads() == 2
        torch.set_num_threads(1)
        assert engines.engine_threads() == 1
    finally:
        torch.set_num_threads(with_threads)
    assert 1 <= engines.usable_cores() <= (os.cpu_count() or 1)


def test_a_container_cpu_quota_bounds_the_usable_cores(tmp_path: Path):
    from meterid.inference.engines import usable_cores

    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "quota").write_text("150000 100000\n")  # docker --cpus 1.5
    (tmp_path / "none").write_text("max 100000\n")
    assert usable_cores(tmp_path / "quota") == 1
    assert usable_cores(tmp_path / "none") == affinity
    assert usable_cores(tmp_path / "missing") == affinity


def test_the_quantizers_info_chatter_is_dropped_and_its_warnings_kept():
    import logging
    import os

    from meterid.inference.quantize import _QuantizerChatter

    def record(level: int, where: str) -> logging.LogRecord:
        return logging.LogRecord("root", level, where, 1, "Increased scale[0] for weight", (),
                                 None)

    quantizer = os.path.join("site-packages", "onnxruntime", "quantization", "qdq_quantizer.py")
    chatter = _QuantizerChatter()
    assert not chatter.filter(record(logging.INFO, quantizer))
    assert chatter.filter(record(logging.WARNING, quantizer))
    assert chatter.filter(record(logging.INFO, os.path.join("meterid", "evaluation", "steps.py")))


def test_an_onnx_engine_without_a_cache_folder_names_the_setting(tiny_model):
    with pytest.raises(ValueError, match="paths.onnx_cache"):
        build_engine(tiny_model.model, "onnxruntime", None, 64)


def test_the_first_convolutions_can_stay_float_in_the_int8_graph(tiny_model, one_thread):
    """``float_convs`` leaves the convolutions nearest the input float32 (their weights are
    not dequantized int8), quantizes the rest, and records the count in the check."""
    import onnx

    from meterid.inference.quantize import make_int8_graph

    graph = make_int8_graph(tiny_model.model, _batches(0, 16), _batches(100, 8),
                            np.zeros(8, dtype=int), _top1_and_unknown, "u8s8",
                            min_agreement=0.5, float_convs=2)
    nodes = onnx.load_from_string(graph.onnx).graph.node
    dequantized = {out for n in nodes if n.op_type == "DequantizeLinear" for out in n.output}
    convs = [n for n in nodes if n.op_type == "Conv"]
    weight_is_int8 = [conv.input[1] in dequantized for conv in convs]
    assert weight_is_int8[:2] == [False, False]
    assert len(weight_is_int8) > 10 and all(weight_is_int8[2:])
    assert graph.check.float_convs == 2 and graph.check.to_dict()["float_convs"] == 2
