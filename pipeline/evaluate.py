"""Evaluation stage: a model's task metrics in PyTorch on the validation and test splits.

The reference every artifact is compared with (the exports' parity, int8 agreement) and
the `accuracy`/`val_accuracy` of the manifest's model entries. Reads no settings.
"""

from __future__ import annotations

from edgepipe.model.task_model import TaskModel
from edgepipe.model.train import predict
from edgepipe.stages import Result, Stages
from edgepipe.tasks.embedding import ProbeLabels, linear_probe
from edgepipe.tokenized import TokenizedData


def run(ctx: Stages, *, model: TaskModel, data: TokenizedData, role: str, probe: ProbeLabels | None = None) -> Result:
    """`probe` (embeddings of labelled texts): also the test accuracy of a linear probe on the model's
    embeddings (`test_linear_probe_accuracy`)."""
    result = {}
    outputs = {}
    for split in ("val", "test"):
        outputs[split] = predict(model, data[split], progress=ctx.progress, description=f"evaluate {role} ({split})")
        scores = model.task.scores(outputs[split], data[split].labels)
        result |= {f"{split}_{name}": value for name, value in scores.items()}
    if probe is not None:
        train = predict(model, data.train, progress=ctx.progress, description=f"embed {role} (train, probe)")
        result["test_linear_probe_accuracy"] = linear_probe(train, probe.train, outputs["test"], probe.test)
    return result, []
