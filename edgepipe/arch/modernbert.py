"""ModernBERT (`model_type: modernbert`): a pre-norm encoder unlike BERT in every module. What differs:

- layers are `x + attn(attn_norm(x))`, then `x + mlp(mlp_norm(x))`, and a `final_norm` after the last;
  the first layer has no `attn_norm` (the embeddings end in a LayerNorm). A student or a pruned model
  whose first layer was another layer of the teacher keeps that layer's norm: the config records it
  (`FIRST_ATTN_NORM`) so the model rebuilds with the same modules;
- one fused `Wqkv` projection ([q | k | v] x heads x head_dim rows): a head is three row blocks;
- a GeGLU FFN: `Wi` gives value and gate side by side (`intermediate_size` each), so a neuron is
  row n and row intermediate_size + n of `Wi`, column n of `Wo` (3 matrices per neuron, not 2);
- rotary positions (nothing to embed or prune; one frequency table per attention kind) and layers
  that alternate global and local attention (`layer_types`; local layers see tokens within
  `local_attention // 2`): edgepipe passes both masks ready-made, additive (MASK_VALUE), so the
  sliding window is a constant pattern in the exported graph rather than HF's mask functions;
- no biases by default: a block pruned to nothing adds nothing;
- no token types, no absolute positions: the graphs take input_ids and attention_mask;
- a classification head of `head` (dense, GELU, LayerNorm over [CLS] or the masked mean, per
  `classifier_pooling`), the encoder's pooler here, then `classifier`;
- a byte-level BPE tokenizer whose special tokens ([CLS] [SEP] [PAD] ...) follow the ~50k pieces, so
  pruning the vocabulary renumbers the pad token (its row moves with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import ModernBertConfig, ModernBertModel
from transformers.activations import ACT2FN

from edgepipe.arch import bpe
from edgepipe.arch.base import (
    Architecture,
    ConstantOutput,
    Dims,
    EncoderOutput,
    Vocabulary,
    emptied,
    keep_rows,
    masked_mean,
    register,
    select_linear,
)
from edgepipe.arch.bert import MASK_VALUE

# config key: the first layer has an attention LayerNorm (it was not the teacher's first layer)
FIRST_ATTN_NORM = "edgepipe_first_attn_norm"
SPECIAL_ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")


class PredictionHeadPooler(nn.Module):
    """ModernBertPredictionHead over the pooled sequence: [CLS] or the masked mean (`classifier_pooling`)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.classifier_bias)
        self.act = ACT2FN[config.classifier_activation]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        self.mean = config.classifier_pooling == "mean"

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(hidden_states, attention_mask) if self.mean else hidden_states[:, 0]
        return self.norm(self.act(self.dense(pooled)))


def additive_masks(config: ModernBertConfig, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per attention kind, the [batch, 1, L, L] scores to add: MASK_VALUE on padded keys, and for local
    layers also on keys farther than `sliding_window` (HF's bidirectional window: |i - j| <= w)."""
    pad = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE
    masks = {}
    if "full_attention" in config.layer_types:
        masks["full_attention"] = pad
    if "sliding_attention" in config.layer_types:
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        far = (positions[None, :] - positions[:, None]).abs() > config.sliding_window
        masks["sliding_attention"] = pad + far.to(torch.float32)[None, None] * MASK_VALUE
    return masks


@register
class ModernBert(Architecture):
    model_type = "modernbert"
    input_names = ("input_ids", "attention_mask")
    checkpoint_prefix = "model."
    head_prefix = "classifier."
    pooler_prefix = "head."
    pooler_target = "pooler."  # dense, activation and norm: the whole PredictionHeadPooler
    other_heads = ("decoder.",)  # the masked-LM decoder
    scope_prefix = r"^model\.(encoder\.)?"
    ffn_matrices = 3

    # -- construction ----------------------------------------------------------------

    def config(self, raw: dict[str, Any]) -> ModernBertConfig:
        return ModernBertConfig(
            **{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version", "model_type")}
        )

    def build(self, config: ModernBertConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        model = ModernBertModel(config)
        if getattr(config, FIRST_ATTN_NORM, False) and model.layers:
            model.layers[0].attn_norm = nn.LayerNorm(config.hidden_size, eps=config.norm_eps, bias=config.norm_bias)
        if with_pooler:
            model.pooler = PredictionHeadPooler(config)
        return model

    def dims(self, config: ModernBertConfig) -> Dims:
        c = config
        return Dims(c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size, c.vocab_size, 0)

    def dropout(self, config: ModernBertConfig) -> float:
        return float(config.classifier_dropout)

    def resized(
        self,
        config: ModernBertConfig,
        *,
        layers: list[int],
        hidden: int,
        heads: int,
        intermediate: int,
        dropout: float | None,
    ) -> ModernBertConfig:
        kinds = config.layer_types
        first_norm = bool(layers) and (layers[0] != 0 or getattr(config, FIRST_ATTN_NORM, False))
        shape = {
            "num_hidden_layers": len(layers),
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "layer_types": [kinds[i] for i in layers],
            FIRST_ATTN_NORM: first_norm,
        }
        drop = (
            {"embedding_dropout": dropout, "attention_dropout": dropout, "mlp_dropout": dropout}
            if dropout is not None
            else {}
        )
        return self.config(config.to_dict() | shape | drop)

    # -- forward ---------------------------------------------------------------------

    def encode(self, encoder, input_ids, attention_mask, token_type_ids, output_hidden_states) -> EncoderOutput:
        out = encoder(
            input_ids=input_ids,
            attention_mask=additive_masks(encoder.config, attention_mask),
            output_hidden_states=output_hidden_states,
        )
        pooled = encoder.pooler(out.last_hidden_state, attention_mask) if self.has_pooler(encoder) else None
        return EncoderOutput(out.last_hidden_state, out.hidden_states, pooled)

    # -- structure -------------------------------------------------------------------

    def layers(self, encoder: ModernBertModel) -> nn.ModuleList:
        return encoder.layers

    def keep_layers(self, encoder: ModernBertModel, layers: list[int]) -> None:
        kept = sorted(layers)
        config = encoder.config
        encoder.layers = nn.ModuleList([encoder.layers[i] for i in kept])
        config.layer_types = [config.layer_types[i] for i in kept]
        config.num_hidden_layers = len(kept)
        setattr(config, FIRST_ATTN_NORM, bool(kept) and not isinstance(encoder.layers[0].attn_norm, nn.Identity))
        for i, layer in enumerate(encoder.layers):
            layer.layer_idx = i
            if hasattr(layer.attn, "layer_idx"):
                layer.attn.layer_idx = i

    def embeddings(self, encoder: ModernBertModel) -> nn.Module:
        return encoder.embeddings

    def word_embeddings(self, encoder: ModernBertModel) -> nn.Embedding:
        return encoder.embeddings.tok_embeddings

    def keep_tokens(self, encoder: ModernBertModel, token_ids: list[int]) -> None:
        config = encoder.config
        kept = sorted(token_ids)
        encoder.embeddings.tok_embeddings = keep_rows(
            encoder.embeddings.tok_embeddings, kept, config.pad_token_id, pad_may_move=True
        )
        new_id = {old: new for new, old in enumerate(kept)}
        for key in SPECIAL_ID_KEYS:
            if isinstance(getattr(config, key, None), int):
                setattr(config, key, new_id.get(getattr(config, key)))
        config.vocab_size = len(kept)

    @torch.no_grad()
    def project_embeddings(self, teacher: ModernBertModel, student: ModernBertModel, basis: torch.Tensor) -> None:
        student.embeddings.tok_embeddings.weight.copy_(teacher.embeddings.tok_embeddings.weight @ basis)

    def head_count(self, layer: nn.Module) -> int:
        att = layer.attn
        return 0 if isinstance(att, ConstantOutput) else att.Wqkv.out_features // (3 * att.head_dim)

    def ffn_count(self, layer: nn.Module) -> int:
        return 0 if isinstance(layer.mlp, ConstantOutput) else layer.mlp.Wo.in_features

    def keep_heads(self, layer: nn.Module, heads: list[int]) -> None:
        att = layer.attn
        if (stand_in := emptied(att, heads, "Wo", True, "heads")) is not None:
            layer.attn = stand_in
            return
        d, n = att.head_dim, self.head_count(layer)
        per_head = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
        att.Wqkv = select_linear(att.Wqkv, torch.cat([part * n * d + per_head for part in range(3)]), 0)
        att.Wo = select_linear(att.Wo, per_head, 1)

    def keep_neurons(self, layer: nn.Module, neurons: list[int]) -> None:
        mlp = layer.mlp
        if (stand_in := emptied(mlp, neurons, "Wo", False, "neurons")) is not None:
            layer.mlp = stand_in
            return
        n = self.ffn_count(layer)
        index = torch.tensor(sorted(neurons), dtype=torch.long)
        mlp.Wi = select_linear(mlp.Wi, torch.cat([index, index + n]), 0)  # value rows, then their gates
        mlp.Wo = select_linear(mlp.Wo, index, 1)

    def attention_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.attn, ConstantOutput) else layer.attn.Wo

    def ffn_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.mlp, ConstantOutput) else layer.mlp.Wo

    def attention_weights(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        att = layer.attn
        q, k, v = att.Wqkv.weight.chunk(3, dim=0)
        return q, k, v, att.Wo.weight

    def ffn_weights(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        value, gate = layer.mlp.Wi.weight.chunk(2, dim=0)
        return torch.cat([value, gate], dim=1), layer.mlp.Wo.weight

    # -- tokenizer -------------------------------------------------------------------

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return bpe.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return bpe.card(tokenizer, directory)
