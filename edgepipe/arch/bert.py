"""BERT (and MiniLM, the built-in teacher): `transformers.BertModel`, WordPiece tokenizer.

RoBERTa, XLM-R and ELECTRA share BERT's layer (attention.self.query ... output.LayerNorm) and
subclass this adapter for what differs: embeddings, positions, the head, the tokenizer family.

Pruning is written by hand because transformers 5 dropped `prune_heads` and no maintained
library handles per-layer head counts *and* a save format that rebuilds them (torch-pruning
works only with the residual stream ignored; a config with non-uniform head counts cannot
round-trip through `save_pretrained`). A layer pruned to zero heads (or zero neurons) keeps
its residual path: the block then computes LayerNorm(x + bias), exactly what the full block
computes when every head's output is zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel, PretrainedConfig

from edgepipe.arch import wordpiece
from edgepipe.arch.base import (
    Architecture,
    Dims,
    EncoderOutput,
    Vocabulary,
    keep_rows,
    register,
    select_linear,
    select_norm,
)

# Added to attention scores of padded positions. HF fills with float32's minimum, which
# makes the int8 scale of that tensor collapse (the mask is then silently dropped);
# -30 already gives padded keys a softmax weight of e^-30 ~ 1e-13.
MASK_VALUE = -30.0


class NoAttention(nn.Module):
    """Stands in for BertAttention with zero heads."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        return self.LayerNorm(hidden_states + self.bias), None


class NoIntermediate(nn.Module):
    def forward(self, hidden_states):
        return hidden_states


class NoFeedForward(nn.Module):
    """Stands in for BertOutput with zero FFN neurons."""

    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, intermediate_output, input_tensor):
        return self.LayerNorm(input_tensor + self.bias)


@register
class Bert(Architecture):
    model_type = "bert"
    config_class: type[PretrainedConfig] = BertConfig
    checkpoint_prefix = "bert."
    other_heads: tuple[str, ...] = ("classifier.", "lm_head.", "discriminator_predictions.", "generator_")
    scope_prefix = r"^model\.(encoder\.encoder\.|encoder\.)?"
    tokenizer_files = ("vocab.txt", *Architecture.tokenizer_files)

    # -- construction ----------------------------------------------------------------

    def config(self, raw: dict[str, Any]) -> PretrainedConfig:
        return self.config_class(
            **{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version", "model_type")}
        )

    def build(self, config: PretrainedConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        return BertModel(config, add_pooling_layer=with_pooler)

    def dims(self, config: PretrainedConfig) -> Dims:
        c = config
        return Dims(
            c.num_hidden_layers,
            c.hidden_size,
            c.num_attention_heads,
            c.intermediate_size,
            c.vocab_size,
            self.position_rows(c),
        )

    def position_rows(self, config: PretrainedConfig) -> int:
        """Embedding rows that are not the vocabulary: absolute positions and token types."""
        return config.max_position_embeddings + config.type_vocab_size

    def dropout(self, config: PretrainedConfig) -> float:
        return config.hidden_dropout_prob

    def resized(
        self,
        config: PretrainedConfig,
        *,
        layers: list[int],
        hidden: int,
        heads: int,
        intermediate: int,
        dropout: float | None,
    ) -> PretrainedConfig:
        shape = {
            "num_hidden_layers": len(layers),
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
        }
        drop = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout} if dropout is not None else {}
        return self.config(config.to_dict() | shape | drop)

    # -- forward ---------------------------------------------------------------------

    def position_ids(self, encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor | None:
        """None: the model's own positions 0..L-1."""
        return None

    def encode(self, encoder, input_ids, attention_mask, token_type_ids, output_hidden_states) -> EncoderOutput:
        # transformers 5 passes a 4D float mask through unchanged: the additive mask is ours
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE
        out = encoder(
            input_ids=input_ids,
            attention_mask=additive,
            token_type_ids=token_type_ids,
            position_ids=self.position_ids(encoder, input_ids),
            output_hidden_states=output_hidden_states,
        )
        pooled = getattr(out, "pooler_output", None)
        if pooled is None and self.has_pooler(encoder):
            pooled = encoder.pooler(out.last_hidden_state)
        return EncoderOutput(out.last_hidden_state, out.hidden_states, pooled)

    # -- structure -------------------------------------------------------------------

    def layers(self, encoder: BertModel) -> nn.ModuleList:
        return encoder.encoder.layer

    def keep_layers(self, encoder: BertModel, layers: list[int]) -> None:
        encoder.encoder.layer = nn.ModuleList([encoder.encoder.layer[i] for i in sorted(layers)])
        encoder.config.num_hidden_layers = len(layers)
        for i, layer in enumerate(encoder.encoder.layer):
            layer.attention.self.layer_idx = i if hasattr(layer.attention, "self") else None

    def embeddings(self, encoder: BertModel) -> nn.Module:
        return encoder.embeddings

    def word_embeddings(self, encoder: BertModel) -> nn.Embedding:
        return encoder.embeddings.word_embeddings

    def keep_tokens(self, encoder: BertModel, token_ids: list[int]) -> None:
        encoder.embeddings.word_embeddings = keep_rows(
            encoder.embeddings.word_embeddings, token_ids, encoder.config.pad_token_id
        )
        encoder.config.vocab_size = len(token_ids)

    @torch.no_grad()
    def project_embeddings(self, teacher: BertModel, student: BertModel, basis: torch.Tensor) -> None:
        te, se = teacher.embeddings, student.embeddings
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            getattr(se, name).weight.copy_(getattr(te, name).weight @ basis)

    def head_count(self, layer: nn.Module) -> int:
        att = layer.attention
        return 0 if isinstance(att, NoAttention) else att.self.query.out_features // att.self.attention_head_size

    def ffn_count(self, layer: nn.Module) -> int:
        return 0 if isinstance(layer.output, NoFeedForward) else layer.intermediate.dense.out_features

    def keep_heads(self, layer: nn.Module, heads: list[int]) -> None:
        att = layer.attention
        if isinstance(att, NoAttention):
            if heads:
                raise ValueError("cannot restore heads of a layer pruned to zero heads")
            return
        if not heads:
            repl = NoAttention(att.output.dense.out_features, att.output.LayerNorm.eps)
            with torch.no_grad():
                repl.bias.copy_(att.output.dense.bias)
                repl.LayerNorm.load_state_dict(att.output.LayerNorm.state_dict())
            layer.attention = repl
            return
        sa = att.self
        d = sa.attention_head_size
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
        sa.query, sa.key, sa.value = (select_linear(m, index, 0) for m in (sa.query, sa.key, sa.value))
        att.output.dense = select_linear(att.output.dense, index, 1)
        sa.num_attention_heads = len(heads)
        sa.all_head_size = len(heads) * d

    def keep_neurons(self, layer: nn.Module, neurons: list[int]) -> None:
        if isinstance(layer.output, NoFeedForward):
            if neurons:
                raise ValueError("cannot restore neurons of a layer pruned to zero neurons")
            return
        if not neurons:
            out = layer.output
            repl = NoFeedForward(out.dense.out_features, out.LayerNorm.eps)
            with torch.no_grad():
                repl.bias.copy_(out.dense.bias)
                repl.LayerNorm.load_state_dict(out.LayerNorm.state_dict())
            layer.intermediate, layer.output = NoIntermediate(), repl
            return
        index = torch.tensor(sorted(neurons), dtype=torch.long)
        layer.intermediate.dense = select_linear(layer.intermediate.dense, index, 0)
        layer.output.dense = select_linear(layer.output.dense, index, 1)

    def residual_writers(self, encoder: BertModel) -> list[nn.Module]:
        writers = [self._embedding_output(encoder)]
        for layer in self.layers(encoder):
            att = layer.attention
            writers += [att.LayerNorm if isinstance(att, NoAttention) else att.output.LayerNorm, layer.output.LayerNorm]
        return writers

    def _embedding_output(self, encoder: BertModel) -> nn.Module:
        """What writes the residual stream's first value: the embeddings' LayerNorm (ELECTRA: its projection)."""
        return encoder.embeddings.LayerNorm

    @torch.no_grad()
    def _keep_embedding_width(self, encoder: BertModel, index: torch.Tensor, gain: float) -> None:
        e = encoder.embeddings
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            table = getattr(e, name)
            new = nn.Embedding(table.num_embeddings, len(index), padding_idx=table.padding_idx)
            new.weight.copy_(table.weight.detach()[:, index])
            setattr(e, name, new)
        e.LayerNorm = select_norm(e.LayerNorm, index, gain)

    @torch.no_grad()
    def keep_hidden(self, encoder: BertModel, dims: list[int], norm_gain: list[float]) -> None:
        head_dim = self.dims(encoder.config).head_dim
        if len(dims) % head_dim:
            raise ValueError(f"a hidden width of {len(dims)} is not a multiple of the head size {head_dim}")
        index = torch.tensor(sorted(dims), dtype=torch.long)
        self._keep_embedding_width(encoder, index, norm_gain[0])
        for i, layer in enumerate(self.layers(encoder)):
            att, out = layer.attention, layer.output
            gain_att, gain_ffn = norm_gain[1 + 2 * i], norm_gain[2 + 2 * i]
            if isinstance(att, NoAttention):
                att.bias = nn.Parameter(att.bias.detach()[index].clone())
                att.LayerNorm = select_norm(att.LayerNorm, index, gain_att)
            else:
                sa = att.self
                sa.query, sa.key, sa.value = (select_linear(m, index, 1) for m in (sa.query, sa.key, sa.value))
                att.output.dense = select_linear(att.output.dense, index, 0)
                att.output.LayerNorm = select_norm(att.output.LayerNorm, index, gain_att)
            if isinstance(out, NoFeedForward):
                out.bias = nn.Parameter(out.bias.detach()[index].clone())
            else:
                layer.intermediate.dense = select_linear(layer.intermediate.dense, index, 1)
                out.dense = select_linear(out.dense, index, 0)
            out.LayerNorm = select_norm(out.LayerNorm, index, gain_ffn)
        if self.has_pooler(encoder):
            encoder.pooler.dense = select_linear(select_linear(encoder.pooler.dense, index, 1), index, 0)
        self._resize_config(encoder.config, len(index), head_dim)

    def _resize_config(self, config: PretrainedConfig, hidden: int, head_dim: int) -> None:
        config.hidden_size = hidden
        config.num_attention_heads = hidden // head_dim  # keeps the head size: hidden / heads

    def grow_heads(self, layer: nn.Module, heads: int) -> None:
        sa, dense = layer.attention.self, layer.attention.output.dense
        width = heads * sa.attention_head_size
        sa.query, sa.key, sa.value = (nn.Linear(m.in_features, width) for m in (sa.query, sa.key, sa.value))
        layer.attention.output.dense = nn.Linear(width, dense.out_features)
        sa.num_attention_heads, sa.all_head_size = heads, width

    def attention_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.attention, NoAttention) else layer.attention.output.dense

    def ffn_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.output, NoFeedForward) else layer.output.dense

    def attention_weights(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        sa = layer.attention.self
        return sa.query.weight, sa.key.weight, sa.value.weight, layer.attention.output.dense.weight

    def ffn_weights(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return layer.intermediate.dense.weight, layer.output.dense.weight

    # -- tokenizer -------------------------------------------------------------------

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return wordpiece.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return wordpiece.card(tokenizer, directory)
