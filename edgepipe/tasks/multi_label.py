"""Multi-label classification: any number of labels per text, one sigmoid per label.

The head is sequence classification's (pooled sentence vector, one linear layer); each output is
a label's logit. Thresholds are tuned per label on the validation split (the one that maximises
that label's F1) and folded into the head's bias, so "label k is on" is `output[k] > 0` in
PyTorch, every runtime, the device runner and the app alike; the card records the tuned
thresholds as probabilities of the model before the fold. Metric: micro-F1 (macro-F1 and exact
match beside it). Distillation: per-label Bernoulli KL at temperature T + binary cross-entropy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.tasks.base import register
from edgepipe.tasks.losses import MultiLabelDistillationLoss
from edgepipe.tasks.sequence_classification import SequenceClassification


def f1_counts(decisions: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label true positives, false positives, false negatives."""
    tp = (decisions & truth).sum(axis=0)
    fp = (decisions & ~truth).sum(axis=0)
    fn = (~decisions & truth).sum(axis=0)
    return tp, fp, fn


def best_thresholds(outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per label, the logit cut that maximises its F1 on these outputs: midway between two adjacent
    sorted outputs (ties: the cut nearest 0, the untuned decision); 0 for a label with no positive."""
    cuts = np.zeros(outputs.shape[1], dtype=np.float32)
    for k in range(outputs.shape[1]):
        z, y = outputs[:, k].astype(np.float64), labels[:, k] > 0.5
        if not y.any():
            continue
        order = np.argsort(-z, kind="stable")
        z, y = z[order], y[order]
        tp = np.cumsum(y)  # taking the top i+1 as positive
        f1 = 2 * tp / (np.arange(1, len(z) + 1) + y.sum())
        below = np.append(z[1:], z[-1] - 1.0)
        candidates = (z + below) / 2
        distinct = np.append(z[1:] != z[:-1], True)  # a cut between equal outputs is no cut
        f1 = np.where(distinct, f1, -1.0)
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        cuts[k] = candidates[best[np.argmin(np.abs(candidates[best]))]]
    return cuts


@register
class MultiLabel(SequenceClassification):
    name = "multi_label"
    metric = "micro_f1"
    agreement_name = "label_agreement"
    signature_columns = ("labels",)
    label_kind = "set"
    distillation_loss_class = MultiLabelDistillationLoss
    tunes_decisions = True
    kotlin_answer = "val on = labels.filterIndexed { k, _ -> logits[0][k] > 0f }   // thresholds are in the bias"
    task_library = None
    app_api = None
    task_library_gap = (
        "MediaPipe's TextClassifier and the Task Library's BertNLClassifier return the best categories of one "
        "softmax; a multi-label model's answer is every label whose output is above 0 (tuned thresholds folded in)"
    )

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs, labels.to(outputs.dtype))

    def scores(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        decisions, truth = outputs > 0, labels > 0.5
        tp, fp, fn = f1_counts(decisions, truth)
        micro = 2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())
        seen = (tp + fp + fn) > 0  # a label never present and never predicted has no F1: left out of the mean
        per_label = 2 * tp[seen] / (2 * tp[seen] + fp[seen] + fn[seen])
        return {
            "micro_f1": float(micro),
            "macro_f1": float(per_label.mean()) if seen.any() else 1.0,
            "exact_match": float((decisions == truth).all(axis=1).mean()),
        }

    def tuned_score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.score(outputs - best_thresholds(outputs, labels), labels)

    def calibrate(self, model: nn.Module, outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        cuts = best_thresholds(outputs, labels)
        with torch.no_grad():
            model.head.bias -= torch.from_numpy(cuts).to(model.head.bias.dtype)
        before = (getattr(model, "calibration", None) or {}).get("threshold_logits", [0.0] * len(cuts))
        total = [float(a + b) for a, b in zip(before, cuts)]
        return {
            "tuned_on": "validation",
            "examples": len(labels),
            "threshold_logits": total,
            "thresholds": [float(1 / (1 + np.exp(-t))) for t in total],
            f"val_{self.metric}": self.score(outputs - cuts, labels),
        }

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        return float(((outputs > 0) == (reference > 0)).mean())

    def baseline(self, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
        """The same label set for every text: the training split's k most frequent labels, for the best k."""
        order = np.argsort(-train_labels.clip(0).sum(axis=0), kind="stable")
        rows = {}
        for k in range(1, train_labels.shape[1] + 1):
            guess = np.zeros_like(test_labels, dtype=np.float32)
            guess[:, order[:k]] = 1.0
            rows[k] = self.score(guess - 0.5, test_labels)
        k = max(rows, key=rows.get)
        return {"name": f"top-{k} frequent labels", "metric": rows[k], "k": k, "by_k": list(rows.values())}

    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {
            "name": self.name,
            "inputs": "text",
            "output": "logits",
            "postprocess": "every label k with logits[k] > 0 (sigmoid > 0.5); thresholds are folded into the bias",
            "labels": labels,
        }
        if calibration:
            out["thresholds"] = dict(zip(labels, calibration["thresholds"]))
            out["thresholds_note"] = (
                "tuned per label on the validation split (best F1) as probabilities of the model before the fold"
            )
        return out
