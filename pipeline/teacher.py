"""Teacher stage: load the teacher, fine-tune it on the task if it has no matching head, cache it.
Reads `teacher:`, `data.max_length`, `seed` and `threads`.

The cache lives outside the run directory (`$EDGEPIPE_CACHE`, default `~/.cache/edgepipe`),
keyed like a stage (edgepipe.stages.derive_key) on the teacher's files, the data split and
the training settings, so a second run - in any output directory - skips the fine-tune.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from edgepipe import distributed, tasks
from edgepipe.config import TeacherConfig
from edgepipe.errors import ModelError
from edgepipe.model.load import fingerprint, load_teacher_dir, teacher_source
from edgepipe.model.task_model import TaskModel, load_model, save_model
from edgepipe.model.train import fit, forward, schedule, validation
from edgepipe.pipeline.data import Dataset
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import sha256_file, write_json_atomic
from edgepipe.stages import derive_key
from edgepipe.tokenized import TokenizedSplit

# what the fine-tune's result depends on (its cache key); the baseline check does not change it
TRAINING_SETTINGS = {
    "epochs",
    "min_steps",
    "max_steps",
    "evaluations",
    "patience",
    "validation_examples",
    "group_by_length",
    "lr",
    "batch_size",
    "freeze_word_embeddings",
}


def labels_match(head: list[str], data: list[str]) -> bool:
    if head == data:
        return True
    if len(head) != len(data):
        return False
    generic_head = head == [f"LABEL_{i}" for i in range(len(head))]
    index_data = data == [str(i) for i in range(len(data))]
    return generic_head or index_data


def prepare(
    dataset: Dataset,
    train: TokenizedSplit,
    val: TokenizedSplit,
    teacher: TeacherConfig,
    *,
    max_length: int,
    seed: int,
    threads: int,
    cache_dir: Path,
    progress: Progress = Silent(),
) -> tuple[TaskModel, dict[str, Any]]:
    """The task-ready teacher (its `key` set) and a report (source, fine-tune settings, cache hit)."""
    source = teacher_source(teacher.path)
    model, has_head = load_teacher_dir(source, tasks.get(dataset.task))
    source_report = {"source": str(source), "source_fingerprint": fingerprint(source), "has_head": has_head}
    if teacher.path is not None and str(source) != str(teacher.path):  # a hub id, resolved in the hub cache
        source_report |= {"hub_id": str(teacher.path), "hub_revision": source.name}
    if model.task.label_kind == "teacher":  # embeddings: the teacher's own outputs are the targets, no training
        if not has_head:
            model.labels = []
        model.key = source_report["source_fingerprint"]
        return model.eval(), source_report | {"fine_tuned": False, "pooling": model.pooling}
    head_ok = has_head and labels_match(model.labels, dataset.labels)
    if has_head and not head_ok and teacher.finetune != "always":
        raise ModelError(
            f"teacher head has labels {model.labels} but the data has {dataset.labels}; "
            "use data with the head's labels, or --set teacher.finetune=always to train a new head"
        )
    if teacher.finetune == "never" or (teacher.finetune == "auto" and head_ok):
        if not has_head:
            raise ModelError(
                f"teacher {source} has no classification head and teacher.finetune=never; allow fine-tuning"
            )
        model.labels = list(dataset.labels)
        model.key = source_report["source_fingerprint"]
        return model.eval(), source_report | {"fine_tuned": False}

    settings = schedule(teacher, teacher.lr, teacher.batch_size)
    dist = distributed.current()
    key = derive_key(
        {
            "source": source_report["source_fingerprint"],
            "data": dataset.key,
            **({"task": dataset.task} if dataset.task != tasks.DEFAULT else {}),
            "max_length": max_length,
            "train": teacher.model_dump(mode="json", include=TRAINING_SETTINGS),
            "seed": seed,
            "threads": threads,
            **({"processes": dist.world} if dist.active else {}),
        }
    )
    entry = Path(cache_dir) / "teachers" / key[:24]
    report = source_report | {"fine_tuned": True, "cache_dir": str(entry), "cache_key": key}
    cached = _read_cache(entry, key)
    if not dist.broadcast(cached is not None):  # every rank trains, or none
        cached = None
    if cached is not None:
        return cached.eval(), report | {"cache_hit": True} | _train_report(entry)

    if not head_ok:
        model.with_labels(dataset.labels, seed)
    words = model.arch.word_embeddings(model.encoder).weight
    words.requires_grad_(not teacher.freeze_word_embeddings)

    def loss_fn(m, idx, batch):
        return m.task.loss(forward(m, batch), batch["labels"])

    train_report = fit(
        model,
        train,
        loss_fn,
        settings,
        seed=seed,
        progress=progress,
        description="fine-tune teacher",
        validate=validation(val, teacher.validation_examples),
    )
    words.requires_grad_(True)
    if dist.main:
        _write_cache(entry, model, source, train_report)
    model.key = key
    return model.eval(), report | {"cache_hit": False, "train": train_report}


def _read_cache(entry: Path, key: str) -> TaskModel | None:
    done = entry / "done.json"
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text())
        if sha256_file(entry / "model.safetensors") != record["weights_sha256"]:
            return None
        return load_model(entry, key=key)
    except (OSError, ValueError, KeyError, ModelError):
        return None


def _train_report(entry: Path) -> dict[str, Any]:
    return {"train": json.loads((entry / "done.json").read_text()).get("train", {})}


def _write_cache(entry: Path, model: TaskModel, source: Path, train_report: dict[str, Any]) -> None:
    """Write into a temp dir, then rename: a killed run never leaves a half cache entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_model(model, tmp, tokenizer_dir=source)
        write_json_atomic(
            tmp / "done.json", {"weights_sha256": sha256_file(tmp / "model.safetensors"), "train": train_report}
        )
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
