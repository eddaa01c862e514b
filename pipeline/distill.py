"""Distillation stage: cut a student from the teacher and train it on the teacher's soft targets.

Loss (Hinton et al. 2015), as a module so it can be tested and reused by recovery:
    alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(y, z_s)
            + hidden_weight * MSE(student hidden states, teacher hidden states)
computed with log_softmax on both sides (stable for large logits).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig

from edgepipe.config import RunConfig, StudentConfig
from edgepipe.errors import ConfigError
from edgepipe.modeling import Classifier, make_encoder
from edgepipe.progress import Progress, Silent
from edgepipe.pipeline.data import TokenizedSplit
from edgepipe.pipeline.train import TrainSettings, fit, predict, seed_everything


class DistillationLoss(nn.Module):
    def __init__(self, temperature: float, alpha: float, hidden_weight: float = 0.0, student_width: int = 0, teacher_width: int = 0):
        super().__init__()
        self.temperature = temperature
        self.alpha = alpha
        self.hidden_weight = hidden_weight
        narrower = hidden_weight > 0 and student_width and student_width != teacher_width
        self.project = nn.Linear(student_width, teacher_width, bias=False) if narrower else nn.Identity()

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        student_hidden: list[torch.Tensor] | None = None,
        teacher_hidden: list[torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        T = self.temperature
        kd = F.kl_div(
            F.log_softmax(student_logits / T, dim=-1),
            F.log_softmax(teacher_logits / T, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (T * T)
        ce = F.cross_entropy(student_logits, labels)
        loss = self.alpha * kd + (1 - self.alpha) * ce
        hidden = torch.zeros((), dtype=loss.dtype)
        if self.hidden_weight > 0 and student_hidden is not None and teacher_hidden is not None:
            w = mask.unsqueeze(-1).to(loss.dtype) if mask is not None else None
            terms = []
            for s, t in zip(student_hidden, teacher_hidden):
                err = (self.project(s) - t).pow(2)
                terms.append((err * w).sum() / (w.sum() * t.shape[-1]) if w is not None else err.mean())
            hidden = torch.stack(terms).mean()
            loss = loss + self.hidden_weight * hidden
        return {"loss": loss, "kd": kd.detach(), "ce": ce.detach(), "hidden": hidden.detach()}


def build_student(teacher: Classifier, cfg: StudentConfig, seed: int) -> Classifier:
    """Same width: copy embeddings, the chosen layers and the head. Narrower: fresh layers,
    embeddings projected onto the teacher embeddings' top principal directions."""
    n_teacher = teacher.config.num_hidden_layers
    bad = [i for i in cfg.layers if not 0 <= i < n_teacher]
    if bad:
        raise ConfigError(f"student.layers {bad} out of range: the teacher has {n_teacher} layers (0-{n_teacher - 1})")
    seed_everything(seed)
    tc = teacher.config
    width = cfg.hidden_size or tc.hidden_size
    heads = cfg.num_heads or (tc.num_attention_heads if width == tc.hidden_size else max(1, width // 64))
    if width % heads:
        raise ConfigError(f"student.hidden_size {width} is not divisible by student.num_heads {heads}; pick matching values")
    if width > tc.hidden_size:
        raise ConfigError(f"student.hidden_size {width} is wider than the teacher ({tc.hidden_size}); a student must be smaller")
    config = BertConfig(
        **(
            tc.to_dict()
            | {
                "num_hidden_layers": len(cfg.layers),
                "hidden_size": width,
                "num_attention_heads": heads,
                "intermediate_size": cfg.intermediate_size or (tc.intermediate_size * width // tc.hidden_size),
            }
            | ({"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout} if cfg.dropout is not None else {})
        )
    )
    student = Classifier(make_encoder(config, teacher.pooling == "cls"), teacher.labels, teacher.pooling)
    if width == tc.hidden_size and config.intermediate_size == tc.intermediate_size and heads == tc.num_attention_heads:
        student.encoder.embeddings.load_state_dict(teacher.encoder.embeddings.state_dict())
        for i, src in enumerate(cfg.layers):
            student.encoder.encoder.layer[i].load_state_dict(teacher.encoder.encoder.layer[src].state_dict())
        if teacher.pooling == "cls":
            student.encoder.pooler.load_state_dict(teacher.encoder.pooler.state_dict())
        student.head.load_state_dict(teacher.head.state_dict())
    else:
        _project_embeddings(teacher, student, width)
    return student


@torch.no_grad()
def _project_embeddings(teacher: Classifier, student: Classifier, width: int) -> None:
    te, se = teacher.encoder.embeddings, student.encoder.embeddings
    words = te.word_embeddings.weight
    _, _, vt = torch.linalg.svd(words - words.mean(0), full_matrices=False)
    basis = vt[:width].T
    se.word_embeddings.weight.copy_(words @ basis)
    se.position_embeddings.weight.copy_(te.position_embeddings.weight @ basis)
    se.token_type_embeddings.weight.copy_(te.token_type_embeddings.weight @ basis)


def distill(
    teacher: Classifier,
    cfg: RunConfig,
    train: TokenizedSplit,
    progress: Progress = Silent(),
    teacher_logits: torch.Tensor | None = None,
) -> tuple[Classifier, dict[str, Any]]:
    """Train a student cut from `teacher`; the teacher is only read. `teacher_logits`
    (the teacher's eval-mode logits on `train`) saves recomputing them."""
    dcfg = cfg.distill
    student = build_student(teacher, cfg.student, cfg.seed)
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    loss_mod = DistillationLoss(
        dcfg.temperature, dcfg.alpha, dcfg.hidden_weight, student.config.hidden_size, teacher.config.hidden_size
    )
    use_hidden = dcfg.hidden_weight > 0
    if teacher_logits is None and not use_hidden:
        teacher_logits = torch.from_numpy(predict(teacher, train, progress=progress, description="teacher soft targets"))
    # student layer i (1-based in hidden_states) learns from the teacher layer it was cut from
    matched = [src + 1 for src in cfg.student.layers]

    def loss_fn(model, idx, batch):
        args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        if use_hidden:
            s_logits, s_hidden = model(*args, output_hidden_states=True)
            with torch.no_grad():
                t_logits, t_hidden = teacher(*args, output_hidden_states=True)
            parts = loss_mod(s_logits, t_logits, batch["labels"], list(s_hidden[1:]), [t_hidden[j] for j in matched], batch["attention_mask"])
        else:
            parts = loss_mod(model(*args), teacher_logits[torch.from_numpy(np.asarray(idx))], batch["labels"])
        return parts["loss"]

    settings = TrainSettings(epochs=dcfg.epochs, lr=dcfg.lr, batch_size=dcfg.batch_size, max_steps=dcfg.max_steps)
    params = list(student.parameters()) + list(loss_mod.parameters())
    report = fit(student, train, loss_fn, settings, seed=cfg.seed, progress=progress, description="distill student", params=params)
    return student.eval(), {
        "layers_from_teacher": list(cfg.student.layers),
        "loss": {"temperature": dcfg.temperature, "alpha": dcfg.alpha, "hidden_weight": dcfg.hidden_weight},
        "train": report,
    }
