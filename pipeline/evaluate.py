"""Evaluation stage: a model's task metrics in PyTorch on the validation and test splits.

The reference every artifact is compared with (the exports' parity, int8 agreement) and
the `accuracy`/`val_accuracy` of the manifest's model entries. Reads no settings.
"""

from __future__ import annotations

from edgepipe.model.task_model import TaskModel
from edgepipe.model.train import predict
from edgepipe.stages import Result, Stages
from edgepipe.tokenized import TokenizedData


def run(ctx: Stages, *, model: TaskModel, data: TokenizedData, role: str) -> Result:
    result = {}
    for split in ("val", "test"):
        outputs = predict(model, data[split], progress=ctx.progress, description=f"evaluate {role} ({split})")
        result |= {f"{split}_{name}": value for name, value in model.task.scores(outputs, data[split].labels).items()}
    return result, []
