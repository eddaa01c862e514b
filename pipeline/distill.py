"""Distillation stage: cut a student from the teacher and train it on the teacher's soft targets.
Reads `student:`, `distill:`, `seed` and `threads`.

The loss is the task's (edgepipe.tasks: soft-target KL at temperature T, the task loss, and
optionally hidden-state MSE between each student layer and the teacher layer it was cut from).
The teacher's outputs on the training split are computed once (`soft_targets`) and shared by
distillation, importance scoring, pruning recovery and the budget search.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgepipe.config import DistillConfig, StudentConfig
from edgepipe.errors import ConfigError
from edgepipe.model.load import Tokenizer
from edgepipe.model.task_model import TaskModel, load_model, new_model, save_model
from edgepipe.model.train import distillation_objective, fit, forward, predict, schedule, seed_everything, validation
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import atomic_path
from edgepipe.stages import Record, Result, Stages
from edgepipe.tokenized import TokenizedData, TokenizedSplit

STUDENT_DIR = "student"
SOFT_TARGETS = "data/teacher_train_logits.npy"


@dataclass
class SoftTargets:
    """The teacher's eval-mode outputs on the transfer set (`TokenizedData.transfer`: the training
    split, then any texts added for distillation), one row per example."""

    logits: torch.Tensor
    key: str


def soft_targets(ctx: Stages, *, teacher: TaskModel, data: TokenizedData) -> Result:
    path = ctx.path(SOFT_TARGETS)
    logits = predict(teacher, data.transfer, progress=ctx.progress, description="teacher soft targets")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, logits)
    return {"n": len(logits), "labelled": len(data.train)}, [path]


TEACHER_TARGETS = "teacher_targets"


def teacher_targets(ctx: Stages, *, teacher: TaskModel, data: TokenizedData) -> Result:
    """The teacher's outputs on every split: the targets of a task whose labels are the teacher's
    (embeddings), computed once and kept as .npy files."""
    files = []
    for split in ("train", "val", "test"):
        path = ctx.path(f"{TEACHER_TARGETS}/{split}.npy")
        out = predict(teacher, data[split], progress=ctx.progress, description=f"teacher outputs ({split})")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, out)
        files.append(path)
    return {split: len(data[split]) for split in ("train", "val", "test")}, files


def load_teacher_targets(ctx: Stages) -> dict[str, np.ndarray]:
    return {s: np.load(ctx.path(f"{TEACHER_TARGETS}/{s}.npy"), allow_pickle=False) for s in ("train", "val", "test")}


def load_soft_targets(ctx: Stages, record: Record) -> SoftTargets:
    return SoftTargets(torch.from_numpy(np.load(ctx.path(SOFT_TARGETS), allow_pickle=False)), record.key)


def build_student(teacher: TaskModel, cfg: StudentConfig, seed: int) -> TaskModel:
    """Same width: copy embeddings, the chosen layers and the head. Narrower: fresh layers,
    embeddings projected onto the teacher embeddings' top principal directions."""
    arch, td = teacher.arch, teacher.dims
    bad = [i for i in cfg.layers if not 0 <= i < td.layers]
    if bad:
        raise ConfigError(f"student.layers {bad} out of range: the teacher has {td.layers} layers (0-{td.layers - 1})")
    seed_everything(seed)
    width = cfg.hidden_size or td.hidden
    heads = cfg.num_heads or (td.heads if width == td.hidden else max(1, width // 64))
    if width % heads:
        raise ConfigError(
            f"student.hidden_size {width} is not divisible by student.num_heads {heads}; pick matching values"
        )
    if width > td.hidden:
        raise ConfigError(
            f"student.hidden_size {width} is wider than the teacher ({td.hidden}); a student must be smaller"
        )
    intermediate = cfg.intermediate_size or (td.intermediate * width // td.hidden)
    config = arch.resized(
        teacher.config,
        layers=list(cfg.layers),
        hidden=width,
        heads=heads,
        intermediate=intermediate,
        dropout=cfg.dropout,
    )
    student = new_model(arch, config, teacher.labels, teacher.pooling, teacher.task)
    if width == td.hidden and intermediate == td.intermediate and heads == td.heads:
        arch.embeddings(student.encoder).load_state_dict(arch.embeddings(teacher.encoder).state_dict())
        for i, src in enumerate(cfg.layers):
            arch.layers(student.encoder)[i].load_state_dict(arch.layers(teacher.encoder)[src].state_dict())
        if arch.has_pooler(teacher.encoder):
            student.encoder.pooler.load_state_dict(teacher.encoder.pooler.state_dict())
        student.head.load_state_dict(teacher.head.state_dict())
    else:
        words = arch.word_embeddings(teacher.encoder).weight.detach()
        _, _, vt = torch.linalg.svd(words - words.mean(0), full_matrices=False)
        arch.project_embeddings(teacher.encoder, student.encoder, vt[:width].T)
    return student


def is_whole_copy(teacher: TaskModel, cfg: StudentConfig) -> bool:
    """Whether the student built from `cfg` is the teacher itself: every layer in order, its width."""
    td = teacher.dims
    return (
        list(cfg.layers) == list(range(td.layers))
        and cfg.hidden_size in (None, td.hidden)
        and cfg.num_heads in (None, td.heads)
        and cfg.intermediate_size in (None, td.intermediate)
    )


def train_student(
    teacher: TaskModel,
    train: TokenizedSplit,
    val: TokenizedSplit,
    teacher_logits: torch.Tensor,
    student_cfg: StudentConfig,
    dcfg: DistillConfig,
    seed: int,
    progress: Progress = Silent(),
) -> tuple[TaskModel, dict[str, Any]]:
    """Train a student cut from `teacher` (only read) on its outputs `teacher_logits` over `train`
    (the transfer set), keeping the checkpoint best on `val`."""
    student = build_student(teacher, student_cfg, seed)
    if is_whole_copy(teacher, student_cfg):
        # every layer at full width: the student computes what the teacher does, so distilling it
        # can only move it away (sentence embeddings keep the teacher's depth: tasks/embedding.py)
        return student.eval(), {
            "layers_from_teacher": list(student_cfg.layers),
            "train": {"steps": 0, "skipped": "the student is the teacher's copy (every layer, same width)"},
        }
    loss_mod = teacher.task.distillation_loss(
        dcfg.temperature, dcfg.alpha, dcfg.hidden_weight, student.dims.hidden, teacher.dims.hidden
    )
    if dcfg.hidden_weight > 0:
        teacher = copy.deepcopy(teacher).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        # student layer i (1-based in hidden_states) learns from the teacher layer it was cut from
        matched = [src + 1 for src in student_cfg.layers]

        def loss_fn(model, idx, batch):
            s_logits, s_hidden = forward(model, batch, output_hidden_states=True)
            with torch.no_grad():
                t_logits, t_hidden = forward(teacher, batch, output_hidden_states=True)
            hidden = ([*s_hidden[1:]], [t_hidden[j] for j in matched])
            return loss_mod(s_logits, t_logits, batch["labels"], *hidden, batch["attention_mask"])["loss"]
    else:
        loss_fn = distillation_objective(loss_mod, teacher_logits)

    params = list(student.parameters()) + list(loss_mod.parameters())
    report = fit(
        student,
        train,
        loss_fn,
        schedule(dcfg, dcfg.lr, dcfg.batch_size, keep_start=True),  # the cut student is a model too
        seed=seed,
        progress=progress,
        description="distill student",
        params=params,
        validate=validation(val, dcfg.validation_examples),
    )
    return student.eval(), {
        "layers_from_teacher": list(student_cfg.layers),
        "loss": {"temperature": dcfg.temperature, "alpha": dcfg.alpha, "hidden_weight": dcfg.hidden_weight},
        "train": report,
    }


def run(
    ctx: Stages,
    *,
    teacher: TaskModel,
    soft_targets: SoftTargets,
    data: TokenizedData,
    tokenizer: Tokenizer,
    student: StudentConfig,
    distill: DistillConfig,
    seed: int,
    threads: int,
) -> Result:
    """The stage (every training process runs it): the student, saved with the tokenizer's files."""
    model, report = train_student(
        teacher, data.transfer, data.val, soft_targets.logits, student, distill, seed, ctx.progress
    )
    if not ctx.dist.main:
        return report, []
    return report, save_model(model, ctx.path(STUDENT_DIR), tokenizer_dir=tokenizer.directory)


def load(ctx: Stages, record: Record) -> TaskModel:
    return load_model(ctx.path(STUDENT_DIR), key=record.key)
