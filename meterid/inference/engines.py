"""Inference engines: the same classifier run by PyTorch, by ONNX Runtime, or by ONNX Runtime on
the model bundle's int8 graph.

Measured on this 2-core CPU (EfficientNet-Lite0 at 224 px, ``make bench``): ONNX Runtime runs
~5x faster than eager PyTorch (fp32 both; bf16 autocast is as fast but changes confidences by up
to 3 points), and its int8 graph (``quantize``) ~1.8x faster again. The fp32 ONNX graph is
exported once per set of weights (cached by a hash of the state dict) and checked against PyTorch
on a batch before use: logits and embeddings must agree within ``TOLERANCE``, else the export is
refused and PyTorch is used. The int8 graph was checked against fp32 when it was made; a graph
whose check failed, or a model without one, falls back to fp32 ONNX with a warning naming why.
Sessions run at ONNX Runtime's full graph optimisation (several times faster than BASIC here)
with as many intra-op threads as the process may really use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from meterid.files import atomic_path
from meterid.inference.int8 import Int8Graph
from meterid.model.classifier import MeterClassifier

log = logging.getLogger(__name__)

TOLERANCE = 1e-3
ENGINES = ("onnxruntime-int8", "onnxruntime", "torch")


class _LogitsAndEmbeddings(nn.Module):
    def __init__(self, model: MeterClassifier):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embeddings = self.model.embed(images)
        return self.model.head(embeddings), embeddings


class TorchEngine:
    name = "torch"

    def __init__(self, model: MeterClassifier, channels_last: bool = True):
        self.model = model.eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        embeddings = self.model.embed(batch)
        return self.model.head(embeddings).numpy(), embeddings.numpy()


def weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_module(module: nn.Module, path: Path, image_size: int, outputs: list[str],
                  input_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``outputs = module(images)`` as ONNX with a dynamic batch axis; ``input_shape``
    (one row's) replaces an image's (3, ``image_size``, ``image_size``) for a module that
    reads activations."""
    example = torch.zeros(2, *(input_shape or (3, image_size, image_size)))
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns about its future
        torch.onnx.export(module.eval(), (example,), str(tmp), input_names=["images"],
                          output_names=outputs,
                          dynamic_axes={name: {0: "batch"} for name in ["images", *outputs]},
                          dynamo=False)
    return path


def export_onnx(model: MeterClassifier, path: Path, image_size: int) -> Path:
    """Write (logits, embeddings) = model(images) as ONNX with a dynamic batch axis."""
    return export_module(_LogitsAndEmbeddings(model), path, image_size, ["logits", "embeddings"])


def onnx_session(graph: Path | bytes, threads: int, spinning: bool = False):
    """An ONNX Runtime CPU session at full graph optimisation, ``threads`` intra-op threads.

    ``spinning``: ONNX Runtime's default keeps its idle intra-op threads busy-waiting for the
    next operator; off, they sleep, and the decode threads sharing these cores get them
    (``make bench``: scoring measures both)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning",
                                     "1" if spinning else "0")
    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                providers=["CPUExecutionProvider"])


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask, bounded by a cgroup v2 CPU quota (a
    container's ``--cpus``), which ``os.cpu_count()`` and PyTorch's default both ignore
    (``os.process_cpu_count`` is Python 3.13 and reads the affinity only)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores or 1, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores or 1)


def engine_threads() -> int:
    """PyTorch's thread count (what a Dask worker pins), never above the usable cores."""
    threads, cores = torch.get_num_threads(), usable_cores()
    if threads > cores:
        log.warning("PyTorch is set to %d threads but this process may use %d cores: ONNX "
                    "Runtime gets %d", threads, cores, cores)
    return min(threads, cores)


class OnnxEngine:
    name = "onnxruntime"

    def __init__(self, graph: Path | bytes, threads: int, name: str = "onnxruntime",
                 spinning: bool = False):
        self.name, self.graph = name, graph
        self.session = onnx_session(graph, threads, spinning)

    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self.session.run(None, {"images": batch.numpy()})
        return logits, embeddings


def max_difference(a: TorchEngine | OnnxEngine, b: TorchEngine | OnnxEngine,
                   batch: torch.Tensor) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a(batch), b(batch), strict=True))


def build_engine(model: MeterClassifier, engine: str, cache_dir: Path | None, image_size: int,
                 int8: Int8Graph | None = None) -> TorchEngine | OnnxEngine:
    """The requested engine; ONNX Runtime only after its outputs match PyTorch's, its int8 graph
    only when the bundle carries one whose check passed (else fp32 ONNX, with a warning)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {ENGINES}")
    torch_engine = TorchEngine(model)
    if engine == "torch":
        return torch_engine
    if engine == "onnxruntime-int8":
        why_not = "the model bundle has no int8 graph" if int8 is None else int8.unusable()
        if int8 is not None and why_not is None:
            return OnnxEngine(int8.onnx, engine_threads(), name="onnxruntime-int8")
        log.warning("not using the int8 engine: %s; using fp32 ONNX Runtime", why_not)
    if cache_dir is None:
        raise ValueError(f"engine {engine!r} exports the model to ONNX and needs a folder for it "
                         "(params.yaml paths.onnx_cache)")
    path = Path(cache_dir) / f"meterid-{weights_digest(model)}-{image_size}.onnx"
    if not path.is_file():
        log.info("exporting the model to ONNX: %s", path)
        export_onnx(model, path, image_size)
    onnx_engine = OnnxEngine(path, threads=engine_threads())
    check = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    difference = max_difference(torch_engine, onnx_engine, check)
    if difference > TOLERANCE:
        log.warning("ONNX Runtime differs from PyTorch by %.2g (> %g): using PyTorch",
                    difference, TOLERANCE)
        return torch_engine
    return onnx_engine
