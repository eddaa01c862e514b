"""XLM-RoBERTa: RoBERTa's body with a SentencePiece Unigram tokenizer (250k pieces): the embedding
table is most of the model, which makes vocabulary pruning (edgepipe.arch.unigram) pay most here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaModel

from edgepipe.arch import unigram
from edgepipe.arch.base import Architecture, Vocabulary, register
from edgepipe.arch.roberta import Roberta


@register
class XlmRoberta(Roberta):
    model_type = "xlm-roberta"
    config_class = XLMRobertaConfig
    tokenizer_files = ("sentencepiece.bpe.model", *Architecture.tokenizer_files)

    def build(self, config: XLMRobertaConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        return XLMRobertaModel(config, add_pooling_layer=with_pooler)

    def prune_vocabulary(self, tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
        return unigram.prune(tokenizer, texts, source, directory)

    def tokenizer_card(self, tokenizer: Any, directory: Path) -> dict[str, Any]:
        return unigram.card(tokenizer, directory)
