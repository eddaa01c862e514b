"""ONNX writer: torch.onnx dynamo exporter, eager attention, dynamic batch and sequence.

Like Optimum's exporter, every export is followed by a parity check against PyTorch
on real examples; a model that does not match is not written as an artifact.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepipe.errors import ExportParityError
from edgepipe.modeling import INPUT_NAMES, Classifier
from edgepipe.rundir import atomic_path
from edgepipe.pipeline.data import TokenizedSplit
from edgepipe.pipeline.train import batches


class _Logits(torch.nn.Module):
    """The exported signature: (input_ids, attention_mask, token_type_ids) -> logits."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask, token_type_ids)


def export_onnx(model: Classifier, path: Path, example: TokenizedSplit, opset: int = 18) -> None:
    model = copy.deepcopy(model).eval()
    model.set_attention("eager")
    _, b = next(batches(example, 2))
    args = tuple(b[name] for name in INPUT_NAMES)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Logits(model),
            args,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=["logits"],
            dynamic_shapes=dims,
            optimize=True,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)


def check_parity(model: Classifier, path: Path, split: TokenizedSplit, atol: float, n: int = 64) -> dict[str, Any]:
    """Max abs logit difference ORT vs PyTorch on `n` real examples, padded as in deployment."""
    from edgepipe.runtimes.onnxruntime import OrtModel
    from edgepipe.pipeline.train import predict

    sub = TokenizedSplit(*(a[:n] for a in (split.input_ids, split.attention_mask, split.token_type_ids, split.labels)))
    ref = predict(model, sub)
    got = OrtModel(path, threads=1).predict(sub)
    diff = float(np.abs(ref - got).max())
    if not np.isfinite(diff) or diff > atol:
        raise ExportParityError(
            f"ONNX export {path.name} differs from PyTorch by {diff:.2e} (allowed {atol:.0e}); "
            "raise export.parity_atol only if you accept that, or report a bug"
        )
    return {"parity_max_abs": diff, "parity_examples": len(sub), "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
