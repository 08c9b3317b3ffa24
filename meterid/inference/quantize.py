"""The int8 engine: the fp32 ONNX graph quantized statically, checked before anyone uses it.

Static QDQ quantization with per-channel weights, calibrated on training photos read through the
model's own decode and eval preset (``train.int8``). On these CPUs only the unsigned-activation /
signed-weight form (U8S8) is faster than fp32; ONNX Runtime's documented default (S8S8) is not
(``benchmarks/scoring.py`` measures both). Dynamic quantization would only touch MatMul/Gemm and
does nothing for a CNN. The first ``float_convs`` convolutions stay float32: quantizing the
stem's and the first block's (at half the input resolution) put most of the int8 graph's error
into the embeddings, and the UNKNOWN rule reads the embeddings (docs/scoring-and-speed.md).

An int8 graph can disagree with the fp32 one, so the training flow checks it on the test photos
(which calibrated nothing): top-1 agreement and UNKNOWN-decision agreement under the model's own
decision policy. The graph and its check travel in the model bundle; ``engines.build_engine``
uses the graph only when the recorded check passed on those exact bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from meterid.inference.engines import OnnxEngine, engine_threads, export_onnx
from meterid.inference.int8 import Int8Check, Int8Graph, sha256_of
from meterid.model.classifier import MeterClassifier

log = logging.getLogger(__name__)

FORMS = ("u8s8", "s8s8")  # activation / weight types


class _Batches:
    """ONNX Runtime's calibration reader protocol over an iterable of NCHW float32 batches."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._batches: Iterator[np.ndarray] = iter(batches)
        self.photos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.photos += len(batch)
        return {"images": np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:  # one pass is all MinMax calibration needs
        pass


def quantize_int8(fp32: Path, out: Path, calibration: Iterable[np.ndarray],
                  form: str = "u8s8", float_convs: int = 0) -> int:
    """Write the int8 QDQ graph of ``fp32`` to ``out``, its first ``float_convs`` convolutions
    left float32; returns the number of photos it was calibrated on."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType

    if form not in FORMS:
        raise ValueError(f"int8 form {form!r}: expected one of {FORMS}")
    activation = QuantType.QUInt8 if form == "u8s8" else QuantType.QInt8

    class Reader(_Batches, CalibrationDataReader):
        pass

    reader = Reader(calibration)
    chatter = _QuantizerChatter()
    logging.getLogger().addFilter(chatter)
    try:
        _quantize(fp32, out, reader, activation, float_convs)
    finally:
        logging.getLogger().removeFilter(chatter)
    if not reader.photos:
        raise ValueError("int8 calibration needs at least one photo")
    return reader.photos


def first_convs(graph: Path, count: int) -> list[str]:
    """Names of the first ``count`` Conv nodes: ONNX keeps nodes in topological order, so
    these are the ones nearest the input."""
    import onnx

    nodes = onnx.load(str(graph), load_external_data=False).graph.node
    return [node.name for node in nodes if node.op_type == "Conv"][:count]


def _quantize(fp32: Path, out: Path, reader: object, activation: object,
              float_convs: int) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="meterid-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Folds constants and infers shapes, so every convolution gets its own scales.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activation,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=first_convs(prepared, float_convs))


class _QuantizerChatter(logging.Filter):
    """ONNX Runtime's quantizer logs INFO lines on the root logger ("Increased scale[...] for
    weight ...", ~100 an evaluation): dropped; its warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING
                or f"onnxruntime{os.sep}quantization" not in record.pathname)


Decide = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _run(engine: Callable, batches: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    outputs = [engine(torch.from_numpy(batch)) for batch in batches]
    return (np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs]))


def make_int8_graph(model: MeterClassifier, calibration: Iterable[np.ndarray],
                    check: list[np.ndarray], check_targets: np.ndarray, decide: Decide,
                    form: str, min_agreement: float, float_convs: int = 0) -> Int8Graph:
    """Export fp32, quantize it on ``calibration`` batches, and check the int8 graph against
    fp32 on the ``check`` batches: ``decide(logits, embeddings)`` gives (top-1 index, UNKNOWN)
    per photo under the model's policy."""
    size = model.preprocessing.image_size
    with tempfile.TemporaryDirectory(prefix="meterid-int8-") as tmp:
        fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx", size)
        calibrated = quantize_int8(fp32_path, Path(tmp) / "int8.onnx", calibration, form,
                                   float_convs)
        graph = (Path(tmp) / "int8.onnx").read_bytes()
        threads = engine_threads()
        fp32 = decide(*_run(OnnxEngine(fp32_path, threads), check))
        int8 = decide(*_run(OnnxEngine(graph, threads), check))
    result = Int8Check(
        form=form, float_convs=float_convs, calibration_photos=calibrated,
        check_photos=len(check_targets),
        top1_agreement=float(np.mean(fp32[0] == int8[0])),
        unknown_agreement=float(np.mean(fp32[1] == int8[1])),
        accuracy_fp32=float(np.mean(fp32[0] == check_targets)),
        accuracy_int8=float(np.mean(int8[0] == check_targets)),
        min_agreement=min_agreement, sha256=sha256_of(graph))
    log.info("int8 (%s, first %d convolutions float) vs fp32 on %d held-out photos: top-1 "
             "agreement %.2f%%, UNKNOWN agreement %.2f%%, accuracy %.2f%% vs %.2f%%: %s", form,
             float_convs, result.check_photos,
             100 * result.top1_agreement, 100 * result.unknown_agreement,
             100 * result.accuracy_int8, 100 * result.accuracy_fp32,
             "passed" if result.passed else "FAILED, scoring will use fp32")
    return Int8Graph(graph, result)
