"""What edgepipe needs to know about an encoder architecture, in one place per architecture.

Every stage that reaches into a model - building a student, pruning heads and FFN neurons,
removing vocabulary rows, counting MACs, naming ONNX node groups for the int8 budget, the
inputs an exporter declares - asks the model's `Architecture` instead of naming
`layer.attention.self.query`. Adding an architecture is one file in this folder: a subclass
registered under its Hugging Face `model_type` (as Optimum registers an OnnxConfig per
architecture), plus its tiny model in the tests (tests/test_arch.py fails without one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class EncoderOutput:
    last_hidden: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings first, then one per layer
    pooled: torch.Tensor | None = None  # the architecture's own pooler on [CLS], when it has one


@dataclass(frozen=True)
class Dims:
    """The sizes stages plan with, read from the model's config."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    other_embedding_rows: int  # position (+ token type) rows: part of the size, not of the vocabulary

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class Vocabulary:
    """A vocabulary reduced to the rows a corpus needs."""

    kept_ids: list[int]  # old ids, ascending: row i of the new table is row kept_ids[i] of the old
    original_size: int
    tokenizer: Any  # a tokenizer of the kept vocabulary, saved to the directory given


class FirstTokenPooler(nn.Module):
    """dense + activation over the first token: what a checkpoint's classification head computes
    before its last projection (BERT's pooler; RoBERTa's `classifier.dense` + tanh, ELECTRA's + GELU,
    DistilBERT's `pre_classifier` + ReLU). Owning it in the encoder lets the task keep one linear head."""

    def __init__(self, hidden: int, activation: str):
        super().__init__()
        from transformers.activations import ACT2FN

        self.dense = nn.Linear(hidden, hidden)
        self.activation = ACT2FN[activation]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class ConstantOutput(nn.Module):
    """Stands in for an attention (or FFN) block with zero heads (neurons): what is left of it is the
    output projection's bias (nothing, for a projection without one), added to the residual."""

    def __init__(self, bias: torch.Tensor | None, returns_tuple: bool):
        super().__init__()
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states, *args, **kwargs):
        out = torch.zeros_like(hidden_states)
        if self.bias is not None:
            out = out + self.bias
        return (out, None) if self.returns_tuple else out


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' vectors (sentence-transformers' mean pooling)."""
    m = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def emptied(block: nn.Module, kept: list[int], output: str, returns_tuple: bool, what: str) -> nn.Module | None:
    """What stands in for an attention / FFN `block` of which nothing is `kept`: a ConstantOutput of its
    `output` projection's bias (the block itself if it already is one); None while some of it is kept."""
    if isinstance(block, ConstantOutput):
        if kept:
            raise ValueError(f"cannot restore {what} of a layer pruned to zero {what}")
        return block
    return None if kept else ConstantOutput(getattr(block, output).bias, returns_tuple)


def keep_rows(
    embedding: nn.Embedding, token_ids: list[int], pad_token_id: int | None, pad_may_move: bool = False
) -> nn.Embedding:
    """A word-embedding table of only these rows, renumbered 0..n-1. Special tokens sort first in most
    vocabularies edgepipe prunes, so the pad token keeps its id; where a model depends on that id (RoBERTa
    counts positions from it) a move is an error, elsewhere (`pad_may_move`: ModernBERT's specials come
    after its 50k pieces) the new table's padding row is the pad token's new id."""
    kept = sorted(token_ids)
    index = torch.tensor(kept, dtype=torch.long)
    padding_idx = pad_token_id
    if pad_token_id is not None and pad_may_move:
        padding_idx = kept.index(pad_token_id) if pad_token_id in kept else None
    elif pad_token_id is not None and (pad_token_id >= len(index) or int(index[pad_token_id]) != pad_token_id):
        raise ValueError(f"the pad token (id {pad_token_id}) would move when pruning the vocabulary")
    new = nn.Embedding(len(index), embedding.embedding_dim, padding_idx=padding_idx)
    with torch.no_grad():
        new.weight.copy_(embedding.weight.detach()[index])
    return new


def select_norm(norm: nn.LayerNorm, index: torch.Tensor, gain: float = 1.0) -> nn.LayerNorm:
    """A LayerNorm over only these features (its weight times `gain`)."""
    new = nn.LayerNorm(len(index), eps=norm.eps, elementwise_affine=norm.weight is not None, bias=norm.bias is not None)
    with torch.no_grad():
        if norm.weight is not None:
            new.weight.copy_(norm.weight.detach()[index] * gain)
        if norm.bias is not None:
            new.bias.copy_(norm.bias.detach()[index])
    return new


def select_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim=0, output features) or columns (dim=1, input features)."""
    w = linear.weight.detach().index_select(dim, index).clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


class Architecture(ABC):
    """One encoder family. Stateless: one instance per model_type serves every model of that type."""

    model_type: str
    # what the exported graphs take, in order (an architecture without token types drops the last)
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    # the encoder's prefix in a `...ForSequenceClassification` checkpoint, and the head's
    checkpoint_prefix: str = ""
    head_prefix: str = "classifier."
    # regex of the module-path prefix the ONNX exporter records before the layer name
    # (node name scopes such as `model.encoder.encoder.layer.0.attention`), stripped for group names
    scope_prefix: str = r"^model\."

    # -- construction --------------------------------------------------------------

    @property
    def key(self) -> str:
        """Stage keys name the architecture (edgepipe.stages)."""
        return self.model_type

    @abstractmethod
    def config(self, raw: dict[str, Any]) -> Any:
        """The transformers config object of a config.json dict."""

    @abstractmethod
    def build(self, config: Any, with_pooler: bool) -> nn.Module:
        """An encoder with fresh weights, SDPA attention (export switches to eager)."""

    @abstractmethod
    def dims(self, config: Any) -> Dims: ...

    @abstractmethod
    def dropout(self, config: Any) -> float:
        """The hidden dropout probability (the task head's dropout too)."""

    def initializer_range(self, config: Any) -> float:
        return float(getattr(config, "initializer_range", 0.02))

    @abstractmethod
    def resized(
        self, config: Any, *, layers: list[int], hidden: int, heads: int, intermediate: int, dropout: float | None
    ) -> Any:
        """The config of a student of this shape (everything else as the teacher's); `layers` are the teacher's
        layers it is cut from, in order (an architecture whose layers differ by kind keeps their kinds)."""

    # a checkpoint's two-layer classification head: its first layer, loaded as the encoder's pooler
    # (under `pooler_target`); None: the checkpoint has none
    pooler_prefix: str | None = None
    pooler_target: str = "pooler.dense."
    # a checkpoint's other heads (pre-training heads, task heads edgepipe replaces): not encoder weights
    other_heads: tuple[str, ...] = ()

    def encoder_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The encoder's tensors of a checkpoint, named as `build()`'s module names them."""
        heads = (self.head_prefix, *self.other_heads)
        out = {}
        for k, v in state.items():
            if self.pooler_prefix is not None and k.startswith(self.pooler_prefix):
                out[self.pooler_target + k.removeprefix(self.pooler_prefix)] = v
            elif not k.startswith(heads):
                out[k.removeprefix(self.checkpoint_prefix)] = v
        return out

    def head_weights(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """The checkpoint's final classification projection as {"weight", "bias"}, or None without one."""
        if f"{self.head_prefix}weight" not in state:
            return None
        return {"weight": state[f"{self.head_prefix}weight"], "bias": state[f"{self.head_prefix}bias"]}

    def optional_weight(self, name: str) -> bool:
        """Tensors a checkpoint may lack without being the wrong model (buffers, an unused pooler)."""
        return name.startswith("pooler.") or "position_ids" in name

    # -- forward ---------------------------------------------------------------------

    @abstractmethod
    def encode(
        self,
        encoder: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        output_hidden_states: bool,
    ) -> EncoderOutput:
        """Run the encoder with edgepipe's additive mask (see edgepipe.model.task_model.MASK_VALUE)."""

    # -- structure: layers, heads, FFN neurons, vocabulary ----------------------------

    @abstractmethod
    def layers(self, encoder: nn.Module) -> nn.ModuleList: ...

    @abstractmethod
    def keep_layers(self, encoder: nn.Module, layers: list[int]) -> None: ...

    @abstractmethod
    def embeddings(self, encoder: nn.Module) -> nn.Module:
        """Every embedding table (words, positions, types) and its normalisation."""

    @abstractmethod
    def word_embeddings(self, encoder: nn.Module) -> nn.Embedding: ...

    @abstractmethod
    def keep_tokens(self, encoder: nn.Module, token_ids: list[int]) -> None:
        """Only these rows of the word-embedding table remain, renumbered 0..n-1."""

    @abstractmethod
    def project_embeddings(self, teacher: nn.Module, student: nn.Module, basis: torch.Tensor) -> None:
        """A narrower student's embedding tables: the teacher's, projected on `basis` [teacher width, student width]."""

    @abstractmethod
    def head_count(self, layer: nn.Module) -> int: ...

    @abstractmethod
    def ffn_count(self, layer: nn.Module) -> int: ...

    @abstractmethod
    def keep_heads(self, layer: nn.Module, heads: list[int]) -> None:
        """Only these attention heads remain (none: the block keeps its residual path)."""

    @abstractmethod
    def keep_neurons(self, layer: nn.Module, neurons: list[int]) -> None:
        """Only these FFN neurons remain (none: the block keeps its residual path)."""

    @abstractmethod
    def attention_output(self, layer: nn.Module) -> nn.Linear | None:
        """The projection after the heads (its input is the heads' outputs side by side); None with no heads."""

    @abstractmethod
    def ffn_output(self, layer: nn.Module) -> nn.Linear | None:
        """The FFN's down projection (its input is the neurons' activations); None with no neurons."""

    @abstractmethod
    def attention_weights(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        """(query, key, value) weights [heads x head_dim, hidden] and the output's [hidden, heads x head_dim]
        of a layer with heads (fused projections are sliced: ModernBERT's Wqkv)."""

    @abstractmethod
    def ffn_weights(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(up [neurons, k x hidden], down [hidden, neurons]) of a layer with FFN neurons; a gated FFN's
        neuron has k = 2 rows side by side (value and gate)."""

    # weight matrices per FFN neuron that a token multiplies through: up + down, or up + gate + down (GLU)
    ffn_matrices: int = 2

    # -- hidden width (the residual stream) ---------------------------------------------

    def residual_writers(self, encoder: nn.Module) -> list[nn.Module]:
        """The modules whose outputs are the residual stream, in order (the embeddings' normalisation,
        then each block's): a gate on their outputs scores every hidden dimension at once.
        [] = this architecture cannot cut its hidden width (`prune.hidden` is refused)."""
        return []

    def keep_hidden(self, encoder: nn.Module, dims: list[int], norm_gain: list[float]) -> None:
        """Only these hidden dimensions remain in every table, projection and normalisation that reads or
        writes the residual stream; `norm_gain[i]` multiplies the i-th residual writer's normalisation
        weight (a LayerNorm over fewer dimensions divides by another spread: prune.hidden_dims)."""
        raise NotImplementedError(f"{self.model_type} cannot cut its hidden width")

    def grow_heads(self, layer: nn.Module, heads: int) -> None:
        """Give a freshly built layer `heads` heads (weights loaded after): a width-pruned model's config
        counts fewer heads than some of its layers keep."""
        raise NotImplementedError(f"{self.model_type} cannot rebuild a layer with more heads than its config")

    def has_pooler(self, encoder: nn.Module) -> bool:
        return getattr(encoder, "pooler", None) is not None

    # -- tokenizer -------------------------------------------------------------------

    tokenizer_files: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

    @abstractmethod
    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        """The rows `texts` need (plus what keeps any word tokenizable), and their tokenizer saved to `directory`."""

    @abstractmethod
    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        """What an app needs to tokenize like Python does (the bundle's model_card `tokenizer` section)."""


ARCHITECTURES: dict[str, Architecture] = {}


def register(cls: type[Architecture]) -> type[Architecture]:
    """Class decorator: the architecture answers for its `model_type`."""
    if cls.model_type in ARCHITECTURES:
        raise ValueError(f"architecture {cls.model_type!r} registered twice")
    ARCHITECTURES[cls.model_type] = cls()
    return cls
