"""What edgepipe needs to know about a task: its head, its losses, its metric, what an app reads.

Every stage asks the model's `Task` instead of taking `argmax` accuracy for granted: the
int8 budget, the budget search's floor, the report's columns and the device runner all read
the task's metric by name (as NNCF's accuracy control takes a validation function). Adding a
task is one file in this folder, registered under its name, plus its tests
(tests/test_tasks.py fails without them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepipe.arch.base import EncoderOutput, select_linear
from edgepipe.errors import ConfigError
from edgepipe.tasks.losses import DistillationLoss


class Task(ABC):
    name: str
    # the headline metric (higher is better); the standalone runner computes it on the device under
    # the same name (devices/standalone/runner.py METRICS), the manifest records it per artifact
    metric: str
    # the agreement of two models' outputs (int8 vs fp32), the lower-noise check of the int8 budget
    agreement_name: str
    output_names: tuple[str, ...] = ("logits",)
    # the TFLite metadata this task's models carry (the Task Library writer's name; None: none), and
    # the app-side API that reads it and tokenizes for the app
    task_library: str | None = None
    app_api: str | None = None
    # the bundle README's Kotlin line that turns the output into the app's answer
    kotlin_answer: str = "val label = labels[logits[0].indices.maxBy { logits[0][it] }]"
    # the soft-target + task loss of distillation (edgepipe.tasks.losses), built by `distillation_loss`
    distillation_loss_class: type[DistillationLoss] = DistillationLoss
    # whether the task has decision settings to tune on validation (`calibrate`)
    tunes_decisions: bool = False
    # why no Task Library / MediaPipe API can run this task's models (said in the TFLite bundle) when none can
    task_library_gap: str | None = None
    # what one example is: "text" (one text per row) or "text_pair" (two texts in one input, as
    # the tokenizer's pair template frames them: [CLS] a [SEP] b [SEP], <s> a </s></s> b </s>, ...)
    inputs: str = "text"
    # what a row's label cell holds: "one" label, or a "set" of labels (`data.label_separator`-separated);
    # "teacher": no label column, the targets are the teacher's outputs (computed after it is loaded)
    label_kind: str = "one"
    # the data columns that make a file this task's when `task: auto` (besides the text column);
    # the first task (in TASKS order) whose columns all exist wins
    signature_columns: tuple[str, ...] = ()
    # the ops static int8 quantizes when `quantize.op_types` is unset: ["all"] = every op ORT can
    # (fastest on x86, and argmax-type outputs tolerate the activations' per-tensor scales)
    int8_op_types: tuple[str, ...] = ("all",)
    # int8 activations: "static" (calibrated scales: litert-torch PT2E for TFLite, and ORT's budget loop
    # starts there; argmax outputs tolerate it) or "dynamic" (scaled per call: TFLite through
    # ai-edge-quantizer's hybrid recipe, export/tflite.py; the budget search's ONNX candidates too)
    int8_activations: str = "static"

    def matches(self, columns: set[str], label_column: str) -> bool:
        """Whether a data file with these columns is this task's (`task: auto`)."""
        return bool(self.signature_columns) and set(self.signature_columns) <= columns

    def config_defaults(self, teacher_layers: int) -> dict[str, Any]:
        """Settings (dotted keys) this task's runs default to where the config left them unset;
        the run prints and records what it took (edgepipe.config.for_task)."""
        return {}

    @property
    def key(self) -> str:
        """Stage keys name the task (edgepipe.stages)."""
        return self.name

    @abstractmethod
    def build_head(
        self, hidden: int, labels: list[str], initializer_range: float, generator: torch.Generator | None
    ) -> nn.Module:
        """The head on top of the encoder (seeded by `generator` when given)."""

    def keep_head_inputs(self, head: nn.Module, dims: torch.Tensor) -> nn.Module:
        """The head reading only these hidden dimensions (the encoder's width was cut: prune.hidden)."""
        if not isinstance(head, nn.Linear):
            raise ConfigError(
                f"the {self.name} task's output is the encoder's hidden state itself: cutting its width "
                "(prune.hidden) would change what the model outputs; set prune.hidden=0"
            )
        return select_linear(head, dims, 1)

    @abstractmethod
    def forward(self, model: nn.Module, out: EncoderOutput, attention_mask: torch.Tensor) -> torch.Tensor:
        """The model's output from the encoder's (pooling, dropout, head)."""

    @abstractmethod
    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The supervised loss (fine-tuning a teacher)."""

    def distillation_loss(
        self,
        temperature: float,
        alpha: float,
        hidden_weight: float = 0.0,
        student_width: int = 0,
        teacher_width: int = 0,
    ) -> nn.Module:
        """A module: (student outputs, teacher outputs, labels[, hidden states, mask]) -> {"loss": ...}."""
        return self.distillation_loss_class(temperature, alpha, hidden_weight, student_width, teacher_width)

    @abstractmethod
    def scores(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every metric of the task on these outputs; `self.metric` among them."""

    @abstractmethod
    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """How often two models decide alike (1.0 = always)."""

    @abstractmethod
    def baseline(self, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
        """What the metric is without a model, on the test split: {"metric": best baseline value,
        "name": which baseline, ...}; the teacher must beat it (edgepipe.pipeline.baseline)."""

    def score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        return self.scores(outputs, labels)[self.metric]

    def tuned_score(self, outputs: np.ndarray, labels: np.ndarray) -> float:
        """The metric once the task's decision settings are tuned on these outputs (what training keeps
        its best checkpoint by); the metric itself for tasks with nothing to tune."""
        return self.score(outputs, labels)

    def calibrate(self, model: nn.Module, outputs: np.ndarray, labels: np.ndarray) -> dict[str, Any] | None:
        """Tune the decision settings on validation outputs and fold them into the model (so every
        runtime, the device runner and the app decide alike from the raw outputs); returns what was
        tuned (kept as `model.calibration`), None for tasks with nothing to tune."""
        return None

    def compare(
        self, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray, split: str = "test"
    ) -> dict[str, Any]:
        """A converted artifact against its float reference on one split: the artifact's metrics (the
        headline and the task's others), the reference's headline metric and their agreement (the
        int8-vs-fp32 record of the quantize, TFLite and ORT-format stages)."""
        return {f"{split}_{name}": value for name, value in self.scores(outputs, labels).items()} | {
            f"fp32_{split}_{self.metric}": self.score(reference, labels),
            self.agreement_name: self.agreement(outputs, reference),
        }

    @abstractmethod
    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        """How an app turns the model's output into an answer (the bundle's model_card `task` section)."""


TASKS: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: the task answers for its `name`."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    TASKS[cls.name] = cls()
    return cls
