"""Host inference over the real runtimes (ONNX Runtime, LiteRT, ExecuTorch), for the stages' checks: export
parity, the int8 budget, artifact metrics. Same session settings and input handling as the
device runner (devices/standalone/runner.py), so host checks and device numbers agree.

Below the stages in the layering: it needs only core types and the standalone runner."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from edgepipe.errors import ModelError
from edgepipe.runtimes.executorch import ExecuTorchModel
from edgepipe.runtimes.litert import LiteRTModel
from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.tokenized import TokenizedSplit

SUFFIXES = (".onnx", ".ort", ".tflite", ".pte")


class HostModel(Protocol):
    path: Path

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray: ...
    def predict(self, split: TokenizedSplit) -> np.ndarray: ...


def open_model(path: Path, threads: int = 1) -> HostModel:
    """The runtime a model file's suffix calls for (.onnx/.ort: ONNX Runtime, .tflite: LiteRT, .pte: ExecuTorch)."""
    path = Path(path)
    if path.suffix in (".onnx", ".ort"):
        return OrtModel(path, threads)
    if path.suffix == ".tflite":
        return LiteRTModel(path, threads)
    if path.suffix == ".pte":
        return ExecuTorchModel(path, threads)
    raise ModelError(f"{path.name}: unknown model format (expected {', '.join(SUFFIXES)})")


def predict(path: Path, split: TokenizedSplit, threads: int = 1) -> np.ndarray:
    return open_model(path, threads).predict(split)
