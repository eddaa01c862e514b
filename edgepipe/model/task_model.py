"""The model every stage passes along: an encoder of some architecture with a task's head.

Saved as `model.safetensors` + `edgepipe.json` (+ tokenizer files), never pickled. The
architecture (edgepipe.arch) knows the encoder's insides, the task (edgepipe.tasks) its
head, loss and metric; this module only holds them together and saves and loads them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgepipe import arch as archs
from edgepipe import tasks
from edgepipe.arch.base import Architecture
from edgepipe.errors import ModelError
from edgepipe.model import surgery
from edgepipe.rundir import atomic_path, write_json_atomic
from edgepipe.tasks.base import Task

FORMAT = "edgepipe-classifier/1"


class TaskModel(nn.Module):
    """`encoder` (the architecture's module), `dropout` and `head` (the task's): the state dict's names.

    `key` is the content key of the stage that produced the model (see edgepipe.stages);
    None for a model nobody recorded yet."""

    def __init__(
        self,
        arch: Architecture,
        encoder: nn.Module,
        labels: list[str],
        pooling: Literal["mean", "cls"] = "mean",
        task: Task | None = None,
        head_seed: int | None = None,
    ):
        super().__init__()
        self.arch = arch
        self.task = task or tasks.get(None)
        self.encoder = encoder
        self.labels = list(labels)
        self.pooling = pooling
        self.dropout = nn.Dropout(arch.dropout(encoder.config))
        self.head = self._head(head_seed)
        self.key: str | None = None
        # decision settings tuned on validation and folded into the head (Task.calibrate); saved with the model
        self.calibration: dict[str, Any] | None = None

    def _head(self, seed: int | None) -> nn.Module:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return self.task.build_head(self.dims.hidden, self.labels, self.arch.initializer_range(self.config), generator)

    @property
    def config(self) -> Any:
        return self.encoder.config

    @property
    def dims(self):
        return self.arch.dims(self.config)

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.arch.input_names

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ):
        out = self.arch.encode(self.encoder, input_ids, attention_mask, token_type_ids, output_hidden_states)
        y = self.task.forward(self, out, attention_mask)
        return (y, out.hidden_states) if output_hidden_states else y

    def with_labels(self, labels: list[str], seed: int) -> TaskModel:
        """A fresh head for these labels (seeded: reproducible init)."""
        self.labels = list(labels)
        self.head = self._head(seed)
        self.calibration = None
        return self

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self, seq_len: int) -> dict[str, Any]:
        """Size facts for the manifest; MACs for one sequence of `seq_len` tokens."""
        shape = surgery.shape_of(self.arch, self.encoder)
        macs = surgery.count_macs(self.arch, self.encoder, seq_len, len(self.labels))
        embedding = sum(p.numel() for p in self.arch.embeddings(self.encoder).parameters())
        return {
            "params": self.num_params(),
            "non_embedding_params": self.num_params() - embedding,
            "macs": macs["total"],
            "non_embedding_macs": macs["attention"] + macs["ffn"],
            "macs_seq_len": seq_len,
            "layers": len(self.arch.layers(self.encoder)),
            "hidden_size": self.dims.hidden,
            "heads_per_layer": shape["heads"],
            "ffn_per_layer": shape["ffn"],
            "vocab_size": self.arch.word_embeddings(self.encoder).num_embeddings,
            "pooling": self.pooling,
            "model_type": self.arch.model_type,
            "task": self.task.name,
        }

    def set_attention(self, impl: Literal["eager", "sdpa"]) -> None:
        """SDPA trains faster; export needs eager (SDPA adds IsNaN/Where nodes to the graph)."""
        self.encoder.set_attn_implementation(impl)


def new_model(
    arch: Architecture, config: Any, labels: list[str], pooling: Literal["mean", "cls"], task: Task | None = None
) -> TaskModel:
    """Fresh weights; the architecture's pooler only where `cls` pooling reads it."""
    return TaskModel(arch, arch.build(config, pooling == "cls"), labels, pooling, task)


def save_model(
    model: TaskModel, directory: Path, tokenizer_dir: Path | None = None, extra: dict | None = None
) -> list[Path]:
    """Weights (safetensors) + description; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("_attn_implementation_autoset", None)
    meta = {
        "format": FORMAT,
        "model_type": model.arch.model_type,
        "task": model.task.name,
        "labels": model.labels,
        "pooling": model.pooling,
        "encoder_config": config,
        "shape": surgery.shape_of(model.arch, model.encoder),
        **({"calibration": model.calibration} if model.calibration else {}),
    } | (extra or {})
    write_json_atomic(directory / "edgepipe.json", meta)
    files = [weights, directory / "edgepipe.json"]
    if tokenizer_dir is not None:
        for name in model.arch.tokenizer_files:
            src = Path(tokenizer_dir) / name
            if src.is_file() and src.resolve() != (directory / name).resolve():
                with atomic_path(directory / name) as tmp:
                    shutil.copyfile(src, tmp)
                files.append(directory / name)
    return files


def load_state(directory: Path) -> dict[str, torch.Tensor]:
    """The weights of a model directory, safetensors first; a pickle only as plain tensors (weights_only)."""
    st = directory / "model.safetensors"
    if st.is_file():
        try:
            return load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelError(f"weights file {st} is corrupt or truncated ({e}); re-download or re-export it") from None
    pt = directory / "pytorch_model.bin"
    if pt.is_file():
        try:
            return torch.load(pt, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(
                f"weights file {pt} cannot be loaded safely ({type(e).__name__}); convert it to safetensors"
            ) from None
    raise ModelError(
        f"{directory} has no model.safetensors (or pytorch_model.bin); point --teacher at a model directory"
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} is unreadable or not JSON ({e}); the model directory is damaged") from None


def load_model(directory: Path, key: str | None = None) -> TaskModel:
    """An edgepipe-saved model (edgepipe.json written before architectures and tasks were named is BERT
    sequence classification); `key` is the content key of the stage that wrote it."""
    directory = Path(directory)
    meta = read_json(directory / "edgepipe.json")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{directory}/edgepipe.json has format {meta.get('format')!r}, expected {FORMAT!r}")
    arch = archs.get(meta.get("model_type", "bert"))
    model = new_model(
        arch, arch.config(meta["encoder_config"]), meta["labels"], meta["pooling"], tasks.get(meta.get("task"))
    )
    if "shape" in meta:
        surgery.apply_shape(arch, model.encoder, meta["shape"])
    state = load_state(directory)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"weights in {directory} do not match its edgepipe.json ({str(e).splitlines()[0]})") from None
    model.key = key
    model.calibration = meta.get("calibration")
    return model
