"""Token classification (named entities, PII): a BIO tag per word, entities as spans.

Labels sit on the first sub-word of each word (the others and the special tokens are IGNORED),
as Hugging Face's token-classification recipe aligns them. Tag ids follow one layout - O = 0,
then per entity type (sorted) B = 2i+1, I = 2i+2 - so spans, and with them entity-level F1, come
from ids alone, in PyTorch and in the numpy-only device runner alike. Entity F1 is seqeval's
default (lenient IOB2) scheme: an entity starts at a B, or at an I that does not continue one of
its type. The head is one linear layer per token; logits on padding positions are zeroed inside
the graph (apps and the int8 checks see exact zeros there).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.arch.base import EncoderOutput
from edgepipe.devices.standalone.runner import entity_spans as spans  # one definition: host and device agree
from edgepipe.tasks.base import register
from edgepipe.tasks.losses import DistillationLoss
from edgepipe.tasks.sequence_classification import SequenceClassification

IGNORE = -100  # not a word's first sub-word, or a special/padding token (F.cross_entropy's ignore_index)


def layout(types: list[str]) -> list[str]:
    """The tag names in id order: O, then B-/I- of each entity type."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def word_tags(outputs: np.ndarray, labels: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """Per example, the predicted and true tag of each word (its first sub-word's position)."""
    n = min(outputs.shape[1], labels.shape[1])  # a fixed-length model may see fewer positions
    pred, true = [], []
    for o, y in zip(outputs[:, :n], labels[:, :n]):
        at = y != IGNORE
        pred.append(o[at].argmax(axis=-1).tolist())
        true.append(y[at].tolist())
    return pred, true


class TokenDistillationLoss(DistillationLoss):
    """Per-token soft targets (KL at temperature T) and cross-entropy, over the words' first sub-words."""

    def align(self, student, teacher, labels):
        width = student.shape[1]  # training batches are trimmed to their longest sequence
        teacher, labels = teacher[:, :width], labels[:, :width]
        at = labels != IGNORE
        return student[at], teacher[at], labels[at]


@register
class TokenClassification(SequenceClassification):
    name = "token_classification"
    metric = "entity_f1"
    agreement_name = "token_agreement"
    signature_columns = ("tokens", "tags")
    inputs = "words"
    label_kind = "tags"
    task_library = None
    app_api = None
    task_library_gap = (
        "MediaPipe and the Task Library have no token-classification (NER) task; tokenize with the shipped "
        "tokenizer files and map each word's first sub-word tag back to characters (app_check.py does)"
    )
    distillation_loss_class = TokenDistillationLoss
    kotlin_answer = "val tags = logits[0].map { row -> labels[row.indices.maxBy { row[it] }] }   // per token"

    def forward(self, model: nn.Module, out: EncoderOutput, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = model.head(model.dropout(out.last_hidden))
        return logits * attention_mask.unsqueeze(-1).to(logits.dtype)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels[:, : outputs.shape[1]]  # the batch is trimmed to its longest sequence; the rest is IGNORE
        return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)

    def scores(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        pred, true = word_tags(outputs, labels)
        tp = found = wanted = 0
        for p, t in zip(pred, true):
            a, b = spans(p), spans(t)
            tp, found, wanted = tp + len(a & b), found + len(a), wanted + len(b)
        right = sum(int(x == y) for p, t in zip(pred, true) for x, y in zip(p, t))
        words = sum(len(t) for t in true)
        return {
            "entity_f1": 2 * tp / (found + wanted) if found + wanted else 1.0,
            "entity_precision": tp / found if found else 1.0,
            "entity_recall": tp / wanted if wanted else 1.0,
            "token_accuracy": right / words if words else 1.0,
        }

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """Per-token argmax agreement on the real tokens (padding logits are exact zeros in both)."""
        real = np.abs(reference).sum(axis=-1) > 0
        return float((outputs.argmax(-1) == reference.argmax(-1))[real].mean()) if real.any() else 1.0

    def baseline(self, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
        """Tagging every word O: no entity found (entity F1 0); its token accuracy is the share of O."""
        at = test_labels != IGNORE
        return {"name": "no entities", "metric": 0.0, "token_accuracy": float((test_labels[at] == 0).mean())}

    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": "words",
            "output": "logits",
            "postprocess": (
                "per token: labels[argmax]; a word's tag is its first sub-word's; entities are BIO spans of words "
                "(seqeval's lenient IOB2), mapped back to characters through each word's offsets"
            ),
            "labels": labels,
            "tag_layout": "O = 0, then per entity type B = 2i+1, I = 2i+2",
        }
