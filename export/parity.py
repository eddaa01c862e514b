"""An exported fp32 artifact against PyTorch: the one check every exporter runs before it keeps a file.

Max abs output difference on real examples, fed as the app feeds them; above `atol` (or not finite)
the export is refused with a one-line ExportParityError, so no artifact that disagrees with the
model it came from is ever written as finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import ExportParityError
from edgepipe.model.task_model import TaskModel
from edgepipe.model.train import predict
from edgepipe.runtimes import open_model
from edgepipe.tokenized import TokenizedSplit

FORMATS = {".onnx": "ONNX", ".ort": "ORT", ".tflite": "TFLite", ".pte": "ExecuTorch"}


def parity_record(reference: np.ndarray, got: np.ndarray, atol: float, what: str, fix: str) -> dict[str, Any]:
    """`what`: "ONNX export model.onnx"; `fix`: what the user may do about a mismatch."""
    diff = float(np.abs(reference - got).max())
    if not np.isfinite(diff) or diff > atol:
        raise ExportParityError(f"{what} differs from PyTorch by {diff:.2e} (allowed {atol:.0e}); {fix}")
    return {"parity_max_abs": diff, "parity_examples": len(got)}


def check_parity(
    model: TaskModel, path: Path, split: TokenizedSplit, atol: float, fix: str = "report a bug", n: int = 64
) -> dict[str, Any]:
    """The artifact's outputs in its runtime vs PyTorch's on the split's first `n` examples, padded to the
    split's length; also records the task's agreement (label agreement, cosine, ...) between the two."""
    sub = split.head(n)
    reference, got = predict(model, sub), open_model(path).predict(sub)
    what = f"{FORMATS.get(path.suffix, path.suffix)} export {path.name}"
    return parity_record(reference, got, atol, what, fix) | {
        model.task.agreement_name: model.task.agreement(got, reference)
    }
