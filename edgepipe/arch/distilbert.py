"""DistilBERT: no token types (two inputs), its own module names (`q_lin`, `out_lin`, `sa_layer_norm`,
`ffn.lin1`/`lin2`, `output_layer_norm`), LayerNorms outside the attention and FFN modules, no pooler
(a checkpoint's head is `pre_classifier` + ReLU, then `classifier`), WordPiece vocabulary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertModel

from edgepipe.arch import wordpiece
from edgepipe.arch.base import (
    Architecture,
    ConstantOutput,
    Dims,
    EncoderOutput,
    FirstTokenPooler,
    Vocabulary,
    emptied,
    keep_rows,
    register,
    select_linear,
)
from edgepipe.arch.bert import MASK_VALUE


@register
class DistilBert(Architecture):
    model_type = "distilbert"
    input_names = ("input_ids", "attention_mask")
    checkpoint_prefix = "distilbert."
    head_prefix = "classifier."
    pooler_prefix = "pre_classifier."
    other_heads = ("vocab_",)  # the masked-LM head
    scope_prefix = r"^model\.(encoder\.transformer\.|transformer\.)?"
    tokenizer_files = ("vocab.txt", *Architecture.tokenizer_files)

    def config(self, raw: dict[str, Any]) -> DistilBertConfig:
        skip = ("architectures", "transformers_version", "model_type")
        return DistilBertConfig(**{k: v for k, v in raw.items() if k not in skip})

    def build(self, config: DistilBertConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        model = DistilBertModel(config)
        if with_pooler:
            model.pooler = FirstTokenPooler(config.dim, "relu")
        return model

    def dims(self, config: DistilBertConfig) -> Dims:
        c = config
        return Dims(c.n_layers, c.dim, c.n_heads, c.hidden_dim, c.vocab_size, c.max_position_embeddings)

    def dropout(self, config: DistilBertConfig) -> float:
        return config.seq_classif_dropout

    def resized(
        self,
        config: DistilBertConfig,
        *,
        layers: list[int],
        hidden: int,
        heads: int,
        intermediate: int,
        dropout: float | None,
    ) -> DistilBertConfig:
        shape = {"n_layers": len(layers), "dim": hidden, "n_heads": heads, "hidden_dim": intermediate}
        drop = {"dropout": dropout, "attention_dropout": dropout} if dropout is not None else {}
        return self.config(config.to_dict() | shape | drop)

    def encode(self, encoder, input_ids, attention_mask, token_type_ids, output_hidden_states) -> EncoderOutput:
        additive = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * MASK_VALUE
        out = encoder(input_ids=input_ids, attention_mask=additive, output_hidden_states=output_hidden_states)
        pooled = encoder.pooler(out.last_hidden_state) if self.has_pooler(encoder) else None
        return EncoderOutput(out.last_hidden_state, out.hidden_states, pooled)

    # -- structure -------------------------------------------------------------------

    def layers(self, encoder: DistilBertModel) -> nn.ModuleList:
        return encoder.transformer.layer

    def keep_layers(self, encoder: DistilBertModel, layers: list[int]) -> None:
        encoder.transformer.layer = nn.ModuleList([encoder.transformer.layer[i] for i in sorted(layers)])
        encoder.transformer.n_layers = len(layers)
        encoder.config.n_layers = len(layers)

    def embeddings(self, encoder: DistilBertModel) -> nn.Module:
        return encoder.embeddings

    def word_embeddings(self, encoder: DistilBertModel) -> nn.Embedding:
        return encoder.embeddings.word_embeddings

    def keep_tokens(self, encoder: DistilBertModel, token_ids: list[int]) -> None:
        encoder.embeddings.word_embeddings = keep_rows(
            encoder.embeddings.word_embeddings, token_ids, encoder.config.pad_token_id
        )
        encoder.config.vocab_size = len(token_ids)

    @torch.no_grad()
    def project_embeddings(self, teacher: DistilBertModel, student: DistilBertModel, basis: torch.Tensor) -> None:
        te, se = teacher.embeddings, student.embeddings
        for name in ("word_embeddings", "position_embeddings"):
            getattr(se, name).weight.copy_(getattr(te, name).weight @ basis)

    def head_count(self, layer: nn.Module) -> int:
        att = layer.attention
        return 0 if isinstance(att, ConstantOutput) else att.q_lin.out_features // att.attention_head_size

    def ffn_count(self, layer: nn.Module) -> int:
        return 0 if isinstance(layer.ffn, ConstantOutput) else layer.ffn.lin1.out_features

    def keep_heads(self, layer: nn.Module, heads: list[int]) -> None:
        att = layer.attention
        if (stand_in := emptied(att, heads, "out_lin", True, "heads")) is not None:
            layer.attention = stand_in
            return
        d = att.attention_head_size
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
        att.q_lin, att.k_lin, att.v_lin = (select_linear(m, index, 0) for m in (att.q_lin, att.k_lin, att.v_lin))
        att.out_lin = select_linear(att.out_lin, index, 1)
        att.n_heads = len(heads)

    def keep_neurons(self, layer: nn.Module, neurons: list[int]) -> None:
        if (stand_in := emptied(layer.ffn, neurons, "lin2", False, "neurons")) is not None:
            layer.ffn = stand_in
            return
        index = torch.tensor(sorted(neurons), dtype=torch.long)
        layer.ffn.lin1 = select_linear(layer.ffn.lin1, index, 0)
        layer.ffn.lin2 = select_linear(layer.ffn.lin2, index, 1)

    def attention_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.attention, ConstantOutput) else layer.attention.out_lin

    def ffn_output(self, layer: nn.Module) -> nn.Linear | None:
        return None if isinstance(layer.ffn, ConstantOutput) else layer.ffn.lin2

    def attention_weights(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        a = layer.attention
        return a.q_lin.weight, a.k_lin.weight, a.v_lin.weight, a.out_lin.weight

    def ffn_weights(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        return layer.ffn.lin1.weight, layer.ffn.lin2.weight

    # -- tokenizer -------------------------------------------------------------------

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return wordpiece.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return wordpiece.card(tokenizer, directory) | {"segment_ids": "none (the model takes no token_type_ids)"}
