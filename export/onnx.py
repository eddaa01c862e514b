"""ONNX writer: torch.onnx dynamo exporter, eager attention, dynamic batch and sequence.
Reads `export.opset` and `export.parity_atol`.

Like Optimum's exporter, every export is followed by a parity check against PyTorch
on real examples; a model that does not match is not written as an artifact.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch

from edgepipe.export.parity import check_parity
from edgepipe.model.task_model import TaskModel
from edgepipe.model.train import batches
from edgepipe.rundir import atomic_path
from edgepipe.stages import Result, Stages
from edgepipe.tokenized import TokenizedData, TokenizedSplit


class _Outputs(torch.nn.Module):
    """The exported signature: the architecture's inputs, by name, -> the task's outputs."""

    def __init__(self, model: TaskModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids, attention_mask, token_type_ids)


def export_onnx(model: TaskModel, path: Path, example: TokenizedSplit, opset: int = 18) -> None:
    model = copy.deepcopy(model).eval()
    model.set_attention("eager")
    names = list(model.input_names)
    _, b = next(batches(example, 2))
    args = tuple(b[name] for name in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Outputs(model),
            args,
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=list(model.task.output_names),
            dynamic_shapes={name: {0: batch, 1: seq} for name in names},
            optimize=True,
            verbose=False,
        )
        program.save(str(tmp), external_data=False)


def run(ctx: Stages, *, role: str, model: TaskModel, data: TokenizedData, opset: int, parity_atol: float) -> Result:
    """The stage: `onnx/ROLE.fp32.onnx`, written only if it matches PyTorch."""
    path = ctx.path(f"onnx/{role}.fp32.onnx")
    export_onnx(model, path, data.test, opset=opset)
    parity = check_parity(
        model, path, data.test, parity_atol, "raise export.parity_atol only if you accept that, or report a bug"
    )
    return parity | {"opset": opset}, [path]
