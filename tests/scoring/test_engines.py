"""ONNX Runtime must give the same predictions as PyTorch, from a cached export."""

from __future__ import annotations

from pathlib import Path

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
