"""Inference engines: the same classifier run by PyTorch or by ONNX Runtime.

Measured on this 2-core CPU (EfficientNet-Lite0 at 224 px, ``make bench``): ONNX Runtime runs
~5x faster than eager PyTorch (fp32 both; bf16 autocast is as fast but changes confidences by up
to 3 points). The ONNX graph is exported once per set of weights (cached by a hash of the
state dict) and checked against PyTorch on a batch before use: logits and embeddings must agree
within ``TOLERANCE``, else the export is refused and PyTorch is used.
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

from meterid.model.classifier import MeterClassifier

log = logging.getLogger(__name__)

TOLERANCE = 1e-3
ENGINES = ("onnxruntime", "torch")


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


def export_onnx(model: MeterClassifier, path: Path, image_size: int) -> Path:
    """Write (logits, embeddings) = model(images) as ONNX with a dynamic batch axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros(2, 3, image_size, image_size)
    with warnings.catch_warnings():  # the TorchScript-based exporter warns about its own future
        warnings.simplefilter("ignore")
        torch.onnx.export(_LogitsAndEmbeddings(model).eval(), (example,), str(tmp),
                          input_names=["images"], output_names=["logits", "embeddings"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"},
                                        "embeddings": {0: "batch"}}, dynamo=False)
    os.replace(tmp, path)
    return path


class OnnxEngine:
    name = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, embeddings = self.session.run(None, {"images": batch.numpy()})
        return logits, embeddings


def max_difference(a: TorchEngine | OnnxEngine, b: TorchEngine | OnnxEngine,
                   batch: torch.Tensor) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a(batch), b(batch), strict=True))


def build_engine(model: MeterClassifier, engine: str, cache_dir: Path,
                 image_size: int) -> TorchEngine | OnnxEngine:
    """The requested engine; ONNX Runtime only after its outputs match PyTorch's."""
    torch_engine = TorchEngine(model)
    if engine == "torch":
        return torch_engine
    path = Path(cache_dir) / f"meterid-{weights_digest(model)}-{image_size}.onnx"
    if not path.is_file():
        log.info("exporting the model to ONNX: %s", path)
        export_onnx(model, path, image_size)
    onnx_engine = OnnxEngine(path, threads=torch.get_num_threads())
    check = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    difference = max_difference(torch_engine, onnx_engine, check)
    if difference > TOLERANCE:
        log.warning("ONNX Runtime differs from PyTorch by %.2g (> %g): using PyTorch",
                    difference, TOLERANCE)
        return torch_engine
    return onnx_engine
