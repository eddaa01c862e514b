"""DeBERTa-v2 and DeBERTa-v3 (`model_type: deberta-v2`): BERT's layer layout (attention.self,
attention.output, intermediate, output) with disentangled attention. What differs:

- attention adds content-to-position and position-to-content scores, read from relative-position
  embeddings that every layer shares (`encoder.rel_embeddings`, normalised by `encoder.LayerNorm`);
  `pos_key_proj` / `pos_query_proj` project them per layer, so pruning a head removes its rows there too;
- no absolute positions (`position_biased_input: false`) and no token types (`type_vocab_size: 0`):
  the exported graphs take input_ids and attention_mask only;
- HF fills padded scores with float32's minimum (`masked_fill`), the fill that collapses the int8 scale
  of that tensor (see bert.MASK_VALUE): `AdditiveMaskAttention` adds MASK_VALUE instead, nothing else;
- a SentencePiece Unigram tokenizer ([CLS] x [SEP], [PAD] = 0) and a checkpoint head of `pooler.dense`
  + GELU on [CLS] (the encoder's pooler here), then `classifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DebertaV2Config, DebertaV2Model
from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention, scaled_size_sqrt

from edgepipe.arch import unigram
from edgepipe.arch.base import Architecture, EncoderOutput, FirstTokenPooler, Vocabulary, register, select_linear
from edgepipe.arch.bert import MASK_VALUE, Bert, NoAttention


class AdditiveMaskAttention(DisentangledSelfAttention):
    """DisentangledSelfAttention.forward (transformers 5.24) with one change: the mask is added
    ((1 - mask) * MASK_VALUE) instead of filled with float32's minimum."""

    def forward(
        self,
        hidden_states,
        attention_mask,
        output_attentions=False,
        query_states=None,
        relative_pos=None,
        rel_embeddings=None,
    ):
        if query_states is None:
            query_states = hidden_states
        heads = self.num_attention_heads
        query = self.transpose_for_scores(self.query_proj(query_states), heads)
        key = self.transpose_for_scores(self.key_proj(hidden_states), heads)
        value = self.transpose_for_scores(self.value_proj(hidden_states), heads)
        scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
        scale = scaled_size_sqrt(query, scale_factor)
        scores = torch.bmm(query, key.transpose(-1, -2) / scale.to(dtype=query.dtype))
        if self.relative_attention:
            rel_embeddings = self.pos_dropout(rel_embeddings)
            scores = scores + self.disentangled_attention_bias(query, key, relative_pos, rel_embeddings, scale_factor)
        scores = scores.view(-1, heads, scores.size(-2), scores.size(-1))
        scores = scores + (1.0 - attention_mask.to(scores.dtype)) * MASK_VALUE
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        context = torch.bmm(probs.view(-1, probs.size(-2), probs.size(-1)), value)
        context = context.view(-1, heads, context.size(-2), context.size(-1)).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (-1,))
        return context, (probs if output_attentions else None)


@register
class DebertaV2(Bert):
    model_type = "deberta-v2"
    config_class = DebertaV2Config
    checkpoint_prefix = "deberta."
    head_prefix = "classifier."
    pooler_prefix = "pooler.dense."
    other_heads = ("classifier.", "lm_predictions.", "mask_predictions.", "cls.", "lm_head.")  # MLM / RTD heads
    input_names = ("input_ids", "attention_mask")
    tokenizer_files = ("spm.model", *Architecture.tokenizer_files)

    def build(self, config: DebertaV2Config, with_pooler: bool) -> nn.Module:
        model = DebertaV2Model(config)
        for layer in model.encoder.layer:
            layer.attention.self.__class__ = AdditiveMaskAttention
        if with_pooler:
            model.pooler = FirstTokenPooler(config.hidden_size, config.pooler_hidden_act)
        return model

    def position_rows(self, config: DebertaV2Config) -> int:
        """Absolute positions (none in v3), token types (none) and the shared relative-position table."""
        c = config
        absolute = c.max_position_embeddings if getattr(c, "position_biased_input", True) else 0
        relative = 0
        if getattr(c, "relative_attention", False):
            buckets = getattr(c, "position_buckets", -1)
            span = buckets if buckets > 0 else (c.max_relative_positions if c.max_relative_positions > 0 else 0)
            relative = 2 * (span or c.max_position_embeddings)
        return absolute + c.type_vocab_size + relative

    def encode(self, encoder, input_ids, attention_mask, token_type_ids, output_hidden_states) -> EncoderOutput:
        # the 0/1 mask as given: the model multiplies the embeddings by it and builds the pairwise mask from
        # it; AdditiveMaskAttention adds MASK_VALUE where that is 0
        out = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states)
        pooled = encoder.pooler(out.last_hidden_state) if self.has_pooler(encoder) else None
        return EncoderOutput(out.last_hidden_state, out.hidden_states, pooled)

    # -- structure -------------------------------------------------------------------

    def embeddings(self, encoder: DebertaV2Model) -> nn.Module:
        """The token tables and what every layer shares: the relative-position table and its LayerNorm."""
        shared = {"embeddings": encoder.embeddings}
        if getattr(encoder.encoder, "rel_embeddings", None) is not None:
            shared["relative"] = encoder.encoder.rel_embeddings
        if getattr(encoder.encoder, "LayerNorm", None) is not None:
            shared["relative_norm"] = encoder.encoder.LayerNorm
        return nn.ModuleDict(shared)

    @torch.no_grad()
    def project_embeddings(self, teacher: DebertaV2Model, student: DebertaV2Model, basis: torch.Tensor) -> None:
        """Tables of the hidden width (and the shared relative-position table) projected on `basis`, as BERT's;
        tables of their own width (`embedding_size`, then `embed_proj`) copied, only the projection fresh."""
        te, se = teacher.embeddings, student.embeddings
        if te.embed_proj is not None:
            state = {k: v for k, v in te.state_dict().items() if not k.startswith("embed_proj.")}
            se.load_state_dict(state, strict=False)
            return
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            if getattr(te, name, None) is not None:
                getattr(se, name).weight.copy_(getattr(te, name).weight @ basis)
        if getattr(teacher.encoder, "rel_embeddings", None) is not None:
            student.encoder.rel_embeddings.weight.copy_(teacher.encoder.rel_embeddings.weight @ basis)

    def head_count(self, layer: nn.Module) -> int:
        att = layer.attention
        return 0 if isinstance(att, NoAttention) else att.self.num_attention_heads

    def residual_writers(self, encoder: nn.Module) -> list[nn.Module]:
        """[]: the width cut is not written for DeBERTa-v2 (its relative-position table and encoder-level
        LayerNorm read the residual width too); prune.hidden is refused in one line."""
        return []

    def keep_heads(self, layer: nn.Module, heads: list[int]) -> None:
        att = layer.attention
        if isinstance(att, NoAttention) or not heads:
            super().keep_heads(layer, heads)  # the residual stand-in, as BERT's
            return
        sa = att.self
        d = sa.attention_head_size
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
        for name in ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj"):
            if getattr(sa, name, None) is not None:
                setattr(sa, name, select_linear(getattr(sa, name), index, 0))
        att.output.dense = select_linear(att.output.dense, index, 1)
        sa.num_attention_heads = len(heads)
        sa.all_head_size = len(heads) * d

    def attention_weights(self, layer: nn.Module) -> tuple[torch.Tensor, ...]:
        sa = layer.attention.self
        return sa.query_proj.weight, sa.key_proj.weight, sa.value_proj.weight, layer.attention.output.dense.weight

    # -- tokenizer -------------------------------------------------------------------

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return unigram.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return unigram.card(tokenizer, directory)
