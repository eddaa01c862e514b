"""Sentence embeddings: one L2-normalised vector per text, for on-device semantic search.

The model's output is the teacher's pooling (masked mean of the last hidden states, or the [CLS]
state) followed by L2 normalisation *inside the graph*, so an app's cosine similarity is a dot
product and no runtime can drop the pooling. There are no labels to learn from: the targets are
the teacher's own embeddings of every split (computed once, after the teacher is loaded), the
teacher is used as it is (a sentence-embedding model such as the built-in all-MiniLM-L6-v2), and
students learn 1 - cosine to the teacher's embedding. Metrics: mean cosine to the teacher's
embeddings (headline) and retrieval agreement, the overlap of each test text's 10 nearest
neighbours (among the test texts) with the teacher's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.arch.base import EncoderOutput, masked_mean
from edgepipe.devices.standalone.runner import mean_cosine  # one definition: host and device agree
from edgepipe.rundir import stable_hash
from edgepipe.tasks.base import Task, register
from edgepipe.tasks.losses import DistillationLoss

NEIGHBOURS = 10


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine of matching rows: the student's loss against the teacher's embeddings."""
    return (1 - F.cosine_similarity(a, b.to(a.dtype), dim=-1)).mean()


def nearest(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Each row's k most cosine-similar other rows (unordered within the k)."""
    e = embeddings.astype(np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k - 1, axis=1)[:, :k]


def neighbour_overlap(outputs: np.ndarray, reference: np.ndarray, k: int = NEIGHBOURS) -> float:
    """The mean share of each text's k nearest neighbours (among the same texts) that the reference's
    k nearest neighbours also hold: 1.0 = the same search results."""
    k = min(k, len(outputs) - 1)
    if k < 1:
        return 1.0
    a, b = nearest(outputs, k), nearest(reference, k)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist())]))


@dataclass
class ProbeLabels:
    """Class labels of the train and test texts, when the embedded data has them (the built-in data's
    fresh/rotten): a linear probe on the embeddings shows they still carry that signal."""

    train: np.ndarray
    test: np.ndarray
    names: list[str]

    @property
    def key(self) -> str:
        return stable_hash({"train": self.train.tolist(), "test": self.test.tolist(), "names": self.names})


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy of a logistic regression fitted on the training embeddings (full-batch L-BFGS,
    L2 1e-4, fixed init: deterministic): how much of the labels' signal the embeddings keep."""
    x, y = torch.from_numpy(train_x.astype(np.float32)), torch.from_numpy(train_y.astype(np.int64))
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 1e-4 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (torch.from_numpy(test_x.astype(np.float32)) @ w + b).argmax(-1).numpy()
    return float((pred == test_y).mean())


class EmbeddingDistillationLoss(DistillationLoss):
    """1 - cosine to the teacher's embedding (the soft term and, on labelled rows, the task term:
    an embedding's label is the teacher's embedding)."""

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return cosine_distance(student, teacher)

    def hard_term(self, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosine_distance(student, labels)


@register
class SentenceEmbedding(Task):
    name = "embedding"
    metric = "mean_cosine"
    agreement_name = "cosine_agreement"
    output_names = ("embeddings",)
    label_kind = "teacher"
    distillation_loss_class = EmbeddingDistillationLoss
    kotlin_answer = "val embedding = embeddings[0]   // L2-normalised: cosine similarity = dot product"
    task_library = None
    app_api = None
    # The output is the whole vector, not an argmax: all-MiniLM-L6-v2 static int8 with every op
    # quantized kept a mean cosine of 0.789 to fp32 (top-10 overlap 0.30); MatMul/Gemm only 0.924
    # (the residual Adds and LayerNorms carry outlier dimensions a per-tensor scale cannot hold)
    int8_op_types = ("MatMul", "Gemm")
    # TFLite: static PT2E int8 kept 0.945 mean cosine / 0.601 top-10 overlap on the built-in texts,
    # ai-edge-quantizer's dynamic recipe 0.9975 / 0.923 (1,000 test texts)
    int8_activations = "dynamic"
    task_library_gap = (
        "MediaPipe's TextEmbedder reads text-embedder metadata that edgepipe does not write yet; tokenize with the "
        "shipped tokenizer files (app_check.py does) and read the L2-normalised embeddings output"
    )

    def config_defaults(self, teacher_layers: int) -> dict[str, Any]:
        """Keep the teacher's depth and every token, and quantize dynamically. An app compares these
        embeddings with ones the teacher made (a server's index), so the goal is the teacher's
        geometry: mean cosine >= 0.95 and top-10 neighbour overlap >= 80 %. Measured on the built-in
        texts (README "Embeddings"): 3-layer students distilled for 2 epochs reached 0.913 / 0.498;
        a vocabulary kept from the training texts alone cost 1.1 points of cosine on test texts;
        the six-layer model's static int8 kept 0.925 (MatMuls) to 0.991 (8 node groups fp32, 290 s
        of sensitivity probes), whole-model dynamic int8 0.992 / 0.838 in seconds - hence no
        sensitivity loop and a 1-point budget."""
        return {
            "student.layers": list(range(teacher_layers)),
            "prune.heads": 0.0,
            "prune.ffn": 0.0,
            "prune.hidden": 0.0,
            "prune.vocab": False,
            "quantize.max_excluded_groups": 0,
            "quantize.max_accuracy_drop": 1.0,
        }

    def matches(self, columns: set[str], label_column: str) -> bool:
        """Texts and no label column: nothing to classify, so the texts are to be embedded."""
        return "text" in columns and label_column not in columns and "labels" not in columns

    def build_head(self, hidden, labels, initializer_range, generator) -> nn.Module:
        return nn.Identity()

    def forward(self, model: nn.Module, out: EncoderOutput, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = out.last_hidden[:, 0] if model.pooling == "cls" else masked_mean(out.last_hidden, attention_mask)
        # x * rsqrt(sum x^2): broadcasts without the Expand that F.normalize exports (ONNX Runtime's
        # symbolic shape inference fails on it before int8 quantization)
        return pooled * torch.rsqrt((pooled * pooled).sum(dim=-1, keepdim=True).clamp_min(1e-12))

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return cosine_distance(outputs, labels)

    def scores(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return {
            "mean_cosine": mean_cosine(outputs, labels),
            f"top{NEIGHBOURS}_overlap": neighbour_overlap(outputs, labels),
        }

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        return mean_cosine(outputs, reference)

    def baseline(self, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
        """One vector for every text: the mean of the training split's (teacher) embeddings."""
        centroid = np.broadcast_to(train_labels.mean(axis=0), test_labels.shape)
        return {"name": "mean training embedding", "metric": mean_cosine(centroid, test_labels)}

    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "inputs": "text",
            "output": "embeddings",
            "postprocess": "none: the embedding is L2-normalised inside the model, so cosine similarity = dot product",
            "labels": [],
        }
