"""The int8 graph a model bundle carries and the check that decides whether it may run
(made by ``quantize.make_int8_graph``, run by ``engines.build_engine``)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Int8Check:
    """The int8 graph against fp32 on held-out photos, and whether it may be used."""

    form: str
    calibration_photos: int
    check_photos: int
    top1_agreement: float
    unknown_agreement: float
    accuracy_fp32: float
    accuracy_int8: float
    min_agreement: float
    sha256: str  # of the graph it was made on
    float_convs: int = 0  # the first convolutions left float32 (bundles before it: none)

    @property
    def passed(self) -> bool:
        return min(self.top1_agreement, self.unknown_agreement) >= self.min_agreement

    def failure(self) -> str | None:
        """Why the graph may not be used (None when it may)."""
        if self.passed:
            return None
        return (f"int8 agreed with fp32 on {self.top1_agreement:.1%} of top-1 labels and "
                f"{self.unknown_agreement:.1%} of UNKNOWN decisions over {self.check_photos} "
                f"held-out photos, under the required {self.min_agreement:.1%}")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict) -> Int8Check:
        return cls(**{k: v for k, v in data.items() if k != "passed"})


@dataclass(frozen=True)
class Int8Graph:
    """What the model bundle carries: the quantized graph and its check."""

    onnx: bytes
    check: Int8Check

    def unusable(self) -> str | None:
        """Why this graph must not run (None when it may): a failed check, or bytes that are
        not the ones checked."""
        if sha256_of(self.onnx) != self.check.sha256:
            return "the int8 graph is not the one its check was made on (sha256 differs)"
        return self.check.failure()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
