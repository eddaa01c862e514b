"""RoBERTa: BERT's layers; byte-level BPE tokenizer (vocab.json + merges.txt, no vocab.txt), pad id 1,
positions counted from `pad_token_id + 1`, and a two-layer classification head (`classifier.dense`
+ tanh, then `classifier.out_proj`), whose first layer becomes the encoder's pooler here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import RobertaConfig, RobertaModel

from edgepipe.arch import bpe
from edgepipe.arch.base import Architecture, Vocabulary, register
from edgepipe.arch.bert import Bert


@register
class Roberta(Bert):
    model_type = "roberta"
    config_class = RobertaConfig
    checkpoint_prefix = "roberta."
    head_prefix = "classifier.out_proj."
    pooler_prefix = "classifier.dense."
    tokenizer_files = ("vocab.json", "merges.txt", *Architecture.tokenizer_files)

    def build(self, config: RobertaConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        return RobertaModel(config, add_pooling_layer=with_pooler)

    def position_ids(self, encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        """pad_token_id + 1 + i for token i. HF counts only non-pad tokens (a cumsum over input_ids != pad);
        with right padding that is the same for every real token, and padded positions are masked out.
        A plain range keeps CumSum out of the exported graphs."""
        start = encoder.config.pad_token_id + 1
        positions = torch.arange(input_ids.shape[1], device=input_ids.device) + start
        return positions.unsqueeze(0).expand_as(input_ids)

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return bpe.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return bpe.card(tokenizer, directory)
