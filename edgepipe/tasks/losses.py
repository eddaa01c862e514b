"""Distillation losses as small modules (as torchdistill registers them), tested on their own.

Soft targets (Hinton et al. 2015):
    alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * task loss
            + hidden_weight * MSE(student hidden states, teacher hidden states)
computed with log_softmax on both sides (stable for large logits). Rows labelled UNLABELED (texts
added for distillation) count in the KL term only. Multi-label outputs are independent sigmoids:
their soft term is the per-label Bernoulli KL, their task loss binary cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgepipe.tokenized import UNLABELED


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) at temperature T, averaged over the rows (the last dim is the classes)."""
    T = temperature
    s = F.log_softmax(student_logits.reshape(-1, student_logits.shape[-1]) / T, dim=-1)
    t = F.log_softmax(teacher_logits.reshape(-1, teacher_logits.shape[-1]) / T, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True) * (T * T)


class HiddenStateMSE(nn.Module):
    """Mean squared error between matched hidden states over real (unpadded) tokens; a narrower
    student's states are projected to the teacher's width by a learned linear map."""

    def __init__(self, student_width: int = 0, teacher_width: int = 0):
        super().__init__()
        narrower = student_width and student_width != teacher_width
        self.project = nn.Linear(student_width, teacher_width, bias=False) if narrower else nn.Identity()

    def forward(
        self, student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        terms = []
        for s, t in zip(student, teacher):
            err = (self.project(s) - t).pow(2)
            if mask is None:
                terms.append(err.mean())
            else:
                w = mask.unsqueeze(-1).to(err.dtype)
                terms.append((err * w).sum() / (w.sum() * t.shape[-1]))
        return torch.stack(terms).mean()


def labelled_rows(labels: torch.Tensor) -> torch.Tensor:
    """Rows with a label (texts added for distillation have UNLABELED in every label slot)."""
    return (labels.reshape(len(labels), -1) != UNLABELED).any(dim=1)


def bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of independent per-label sigmoids at temperature T, averaged over
    every (row, label): the multi-label soft-target term (zero when the student matches the teacher)."""
    T = temperature
    p = torch.sigmoid(teacher_logits / T)
    log_q, log_not_q = F.logsigmoid(student_logits / T), F.logsigmoid(-student_logits / T)
    log_p, log_not_p = F.logsigmoid(teacher_logits / T), F.logsigmoid(-teacher_logits / T)
    kl = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    return kl.mean() * (T * T)


class DistillationLoss(nn.Module):
    """alpha * soft-target term + (1 - alpha) * task loss on the labelled rows (+ hidden_weight *
    hidden-state MSE). Sequence classification: softmax KL and cross-entropy; a task with other
    outputs overrides `soft_term` and `hard_term` (MultiLabelDistillationLoss)."""

    def __init__(
        self,
        temperature: float,
        alpha: float,
        hidden_weight: float = 0.0,
        student_width: int = 0,
        teacher_width: int = 0,
    ):
        super().__init__()
        self.temperature = temperature
        self.alpha = alpha
        self.hidden_weight = hidden_weight
        self.hidden = HiddenStateMSE(student_width if hidden_weight > 0 else 0, teacher_width)

    @property
    def project(self) -> nn.Module:
        return self.hidden.project

    def align(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The outputs and labels the soft and task terms compare (per-token tasks pick positions)."""
        return student, teacher, labels

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return soft_target_kl(student, teacher, self.temperature)

    def hard_term(self, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(student, labels)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        student_hidden: list[torch.Tensor] | None = None,
        teacher_hidden: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        student_logits, teacher_logits, labels = self.align(student_logits, teacher_logits, labels)
        kd = self.soft_term(student_logits, teacher_logits)
        labelled = labelled_rows(labels)  # texts added for distillation have the teacher's outputs only
        if bool(labelled.all()):
            ce = self.hard_term(student_logits, labels)
        elif bool(labelled.any()):
            ce = self.hard_term(student_logits[labelled], labels[labelled])
        else:
            ce = torch.zeros((), dtype=kd.dtype)
        loss = self.alpha * kd + (1 - self.alpha) * ce
        hidden = torch.zeros((), dtype=loss.dtype)
        if self.hidden_weight > 0 and student_hidden is not None and teacher_hidden is not None:
            hidden = self.hidden(student_hidden, teacher_hidden, mask)
            loss = loss + self.hidden_weight * hidden
        return {"loss": loss, "kd": kd.detach(), "ce": ce.detach(), "hidden": hidden.detach()}


class MultiLabelDistillationLoss(DistillationLoss):
    """Per-label soft targets (Bernoulli KL at temperature T) and per-label binary cross-entropy."""

    def soft_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return bernoulli_kl(student, teacher, self.temperature)

    def hard_term(self, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(student, labels.to(student.dtype))
