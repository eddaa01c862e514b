"""Sequence classification: one label per text, from a pooled sentence vector and a linear head.

Pooling is the teacher's: `mean` (masked mean of the last hidden states, sentence-transformers
style) or `cls` (the architecture's pooler on [CLS], as `BertForSequenceClassification`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.arch.base import EncoderOutput, masked_mean
from edgepipe.tasks.base import Task, register


@register
class SequenceClassification(Task):
    name = "sequence_classification"
    metric = "accuracy"
    agreement_name = "argmax_agreement"
    task_library = "BertNLClassifier"
    app_api = "MediaPipe TextClassifier"

    def build_head(
        self, hidden: int, labels: list[str], initializer_range: float, generator: torch.Generator | None
    ) -> nn.Linear:
        head = nn.Linear(hidden, len(labels))
        if generator is not None:
            with torch.no_grad():
                head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * initializer_range)
                head.bias.zero_()
        return head

    def forward(self, model: nn.Module, out: EncoderOutput, attention_mask: torch.Tensor) -> torch.Tensor:
        if model.pooling == "cls":
            pooled = out.pooled
        else:
            pooled = masked_mean(out.last_hidden, attention_mask)
        return model.head(model.dropout(pooled))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, labels)

    def scores(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Accuracy, and macro-F1 beside it (the mean of each class's F1 over the classes that occur in
        the labels or the predictions): what accuracy hides when one class dominates."""
        pred = outputs.argmax(axis=-1)
        f1 = []
        for c in np.union1d(np.unique(labels), np.unique(pred)):
            tp, fp, fn = (
                ((pred == c) & (labels == c)).sum(),
                ((pred == c) & (labels != c)).sum(),
                ((pred != c) & (labels == c)).sum(),
            )
            f1.append(2 * tp / (2 * tp + fp + fn))
        return {"accuracy": float((pred == labels).mean()), "macro_f1": float(np.mean(f1)) if f1 else 1.0}

    def baseline(self, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
        """Always the training split's most frequent label (majority), and guessing at the training
        split's label frequencies (stratified: expected accuracy sum_i p_train(i) * p_test(i))."""
        k = int(max(train_labels.max(), test_labels.max())) + 1
        prior = np.bincount(train_labels, minlength=k) / len(train_labels)
        share = np.bincount(test_labels, minlength=k) / len(test_labels)
        majority = int(prior.argmax())
        rows = {"majority": float(share[majority]), "stratified": float(prior @ share)}
        name = max(rows, key=rows.get)
        return {"name": name, "metric": rows[name], "majority_label_id": majority, **rows}

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        return float((outputs.argmax(axis=-1) == reference.argmax(axis=-1)).mean())

    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": "text",
            "output": "logits",
            "postprocess": "softmax; the label is labels[argmax]",
            "labels": labels,
        }
