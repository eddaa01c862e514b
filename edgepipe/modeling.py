"""The classifier every stage passes along: a BERT-style encoder, pooling, a linear head.

Saved as `model.safetensors` + `edgepipe.json` (+ tokenizer files), never pickled.
A plain Hugging Face directory loads too: a bare encoder (head added later) or a
`BertForSequenceClassification` checkpoint (its pooler + classifier kept).
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
from transformers import BertConfig, BertModel

from edgepipe.errors import ModelError
from edgepipe.rundir import atomic_path, write_json_atomic

FORMAT = "edgepipe-classifier/1"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SUPPORTED_MODEL_TYPES = ("bert",)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Added to attention scores of padded positions. HF fills with float32's minimum, which
# makes the int8 scale of that tensor collapse (the mask is then silently dropped);
# -30 already gives padded keys a softmax weight of e^-30 ~ 1e-13.
MASK_VALUE = -30.0


class Classifier(nn.Module):
    """`pooling="mean"`: masked mean of the last hidden states (sentence-transformers style);
    `pooling="cls"`: BERT's pooler on [CLS] (HF `BertForSequenceClassification`)."""

    def __init__(self, encoder: BertModel, labels: list[str], pooling: Literal["mean", "cls"] = "mean"):
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.pooling = pooling
        self.dropout = nn.Dropout(encoder.config.hidden_dropout_prob)
        self.head = nn.Linear(encoder.config.hidden_size, len(labels))

    @property
    def config(self) -> BertConfig:
        return self.encoder.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ):
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=additive,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
        )
        if self.pooling == "cls":
            pooled = out.pooler_output
        else:
            h = out.last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        logits = self.head(self.dropout(pooled))
        if output_hidden_states:
            return logits, out.hidden_states
        return logits

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self, seq_len: int) -> dict[str, Any]:
        """Size facts for the manifest; MACs for one sequence of `seq_len` tokens."""
        from edgepipe.surgery import count_macs, shape_of

        c = self.config
        shape = shape_of(self.encoder)
        macs = count_macs(self.encoder, seq_len, len(self.labels))
        embedding = sum(p.numel() for p in self.encoder.embeddings.parameters())
        return {
            "params": self.num_params(),
            "non_embedding_params": self.num_params() - embedding,
            "macs": macs["total"],
            "non_embedding_macs": macs["attention"] + macs["ffn"],
            "macs_seq_len": seq_len,
            "layers": c.num_hidden_layers,
            "hidden_size": c.hidden_size,
            "heads_per_layer": shape["heads"],
            "ffn_per_layer": shape["ffn"],
            "vocab_size": self.encoder.embeddings.word_embeddings.num_embeddings,
            "pooling": self.pooling,
        }

    def set_attention(self, impl: Literal["eager", "sdpa"]) -> None:
        """SDPA trains faster; export needs eager (SDPA adds IsNaN/Where nodes to the graph)."""
        self.encoder.set_attn_implementation(impl)


def make_encoder(config: BertConfig, with_pooler: bool) -> BertModel:
    config._attn_implementation = "sdpa"
    return BertModel(config, add_pooling_layer=with_pooler)


def save_classifier(model: Classifier, directory: Path, tokenizer_dir: Path | None = None, extra: dict | None = None) -> list[Path]:
    """Weights (safetensors) + description; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("_attn_implementation_autoset", None)
    from edgepipe.surgery import shape_of

    meta = {
        "format": FORMAT,
        "labels": model.labels,
        "pooling": model.pooling,
        "encoder_config": config,
        "shape": shape_of(model.encoder),
    } | (extra or {})
    write_json_atomic(directory / "edgepipe.json", meta)
    files = [weights, directory / "edgepipe.json"]
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            src = Path(tokenizer_dir) / name
            if src.is_file() and src.resolve() != (directory / name).resolve():
                with atomic_path(directory / name) as tmp:
                    shutil.copyfile(src, tmp)
                files.append(directory / name)
    return files


def _load_state(directory: Path) -> dict[str, torch.Tensor]:
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
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a plain tensor file"
            raise ModelError(f"weights file {pt} cannot be loaded safely ({type(e).__name__}); convert it to safetensors") from None
    raise ModelError(f"{directory} has no model.safetensors (or pytorch_model.bin); point --teacher at a model directory")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} is unreadable or not JSON ({e}); the model directory is damaged") from None


def load_classifier(directory: Path) -> Classifier:
    """Load an edgepipe-saved classifier."""
    directory = Path(directory)
    meta = _read_json(directory / "edgepipe.json")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{directory}/edgepipe.json has format {meta.get('format')!r}, expected {FORMAT!r}")
    from edgepipe.surgery import apply_shape

    config = BertConfig(**meta["encoder_config"])
    model = Classifier(make_encoder(config, meta["pooling"] == "cls"), meta["labels"], meta["pooling"])
    if "shape" in meta:
        apply_shape(model.encoder, meta["shape"])
    state = _load_state(directory)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"weights in {directory} do not match its edgepipe.json ({str(e).splitlines()[0]})") from None
    return model


def check_model_dir(directory: Path) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise ModelError(f"teacher directory {directory} does not exist; pass a local Hugging Face model dir to --teacher")
    if not directory.is_dir():
        raise ModelError(f"--teacher {directory} is a file; pass the directory that holds config.json")
    try:
        next(directory.iterdir(), None)
    except PermissionError:
        raise ModelError(f"teacher directory {directory} is not readable; fix its permissions") from None
    return directory


def check_teacher_config(directory: Path) -> dict:
    """The teacher's config.json, refused early (before tokenizers or weights) unless it is a BERT-style encoder."""
    directory = check_model_dir(directory)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        if not any(directory.iterdir()):
            raise ModelError(f"teacher directory {directory} is empty; it needs config.json, weights and vocab.txt")
        raise ModelError(f"teacher directory {directory} has no config.json; pass a Hugging Face model directory")
    raw = _read_json(cfg_path)
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"teacher {directory} is a {model_type!r} model; edgepipe needs a BERT-style encoder "
            f"(model_type {', '.join(SUPPORTED_MODEL_TYPES)}), e.g. MiniLM or BERT"
        )
    return raw


def load_teacher_dir(directory: Path) -> tuple[Classifier, bool]:
    """Load a teacher from any supported directory; returns (model, has_trained_head)."""
    directory = check_model_dir(directory)
    if (directory / "edgepipe.json").is_file():
        return load_classifier(directory), True
    raw = check_teacher_config(directory)
    cfg_path = directory / "config.json"
    try:
        config = BertConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for bad configs
        raise ModelError(f"teacher config {cfg_path} is invalid ({e})") from None
    state = _load_state(directory)
    arch = (raw.get("architectures") or [""])[0]
    with_head = "classifier.weight" in state or "ForSequenceClassification" in arch
    enc_state = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("classifier.")}
    if with_head:
        id2label = raw.get("id2label") or {str(i): f"LABEL_{i}" for i in range(state["classifier.weight"].shape[0])}
        labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
        model = Classifier(make_encoder(config, True), labels, "cls")
    else:
        # mean pooling never reads BERT's pooler: leave it out (fewer parameters, smaller exports)
        model = Classifier(make_encoder(config, False), ["0", "1"], "mean")
    missing, unexpected = model.encoder.load_state_dict(enc_state, strict=False)
    missing = [k for k in missing if not k.startswith("pooler.") and "position_ids" not in k]
    if missing:
        raise ModelError(
            f"teacher weights in {directory} are not a BERT encoder ({len(missing)} missing tensors, "
            f"e.g. {missing[0]}); check that config.json matches the weights"
        )
    if with_head:
        model.head.weight.data.copy_(state["classifier.weight"])
        model.head.bias.data.copy_(state["classifier.bias"])
    return model, with_head


def with_labels(model: Classifier, labels: list[str], seed: int) -> Classifier:
    """Replace the head with a fresh one for these labels (seeded: reproducible init)."""
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(model.config.hidden_size, len(labels))
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * model.config.initializer_range)
        head.bias.zero_()
    model.head = head
    model.labels = list(labels)
    return model
