"""ELECTRA (the discriminator): BERT's layers and WordPiece vocabulary, but embeddings of their own
width (`embedding_size`) projected to the hidden size by `embeddings_project`, no pooler, and a
two-layer head (`classifier.dense` + GELU, then `classifier.out_proj`)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import ElectraConfig, ElectraModel

from edgepipe.arch.base import FirstTokenPooler, register, select_linear
from edgepipe.arch.bert import Bert


@register
class Electra(Bert):
    model_type = "electra"
    config_class = ElectraConfig
    checkpoint_prefix = "electra."
    head_prefix = "classifier.out_proj."
    pooler_prefix = "classifier.dense."

    def build(self, config: ElectraConfig, with_pooler: bool) -> nn.Module:
        config._attn_implementation = "sdpa"
        model = ElectraModel(config)
        if getattr(config, "embeddings_project", False) and not hasattr(model, "embeddings_project"):
            # a width cut to the tables' own width keeps the projection (ElectraModel builds it only
            # when the widths differ; its forward uses it whenever it exists)
            model.embeddings_project = nn.Linear(config.embedding_size, config.hidden_size)
        if with_pooler:
            model.pooler = FirstTokenPooler(config.hidden_size, "gelu")
        return model

    @torch.no_grad()
    def project_embeddings(self, teacher: nn.Module, student: nn.Module, basis: torch.Tensor) -> None:
        """A student keeps the teacher's embedding width (`embedding_size`): the tables are copied as
        they are and only `embeddings_project` (to the student's narrower hidden size) starts fresh."""
        student.embeddings.load_state_dict(teacher.embeddings.state_dict())

    def embeddings(self, encoder: nn.Module) -> nn.Module:
        """The tables and, when the widths differ, their projection: what a same-width student copies."""
        project = getattr(encoder, "embeddings_project", None)
        if project is None:
            return encoder.embeddings
        return nn.ModuleDict({"embeddings": encoder.embeddings, "project": project})

    def _embedding_output(self, encoder: nn.Module) -> nn.Module:
        return getattr(encoder, "embeddings_project", None) or encoder.embeddings.LayerNorm

    @torch.no_grad()
    def _keep_embedding_width(self, encoder: nn.Module, index: torch.Tensor, gain: float) -> None:
        """With a projection the tables keep their own width and only the projection's outputs go."""
        project = getattr(encoder, "embeddings_project", None)
        if project is None:
            super()._keep_embedding_width(encoder, index, gain)
            encoder.config.embedding_size = len(index)
            return
        encoder.config.embeddings_project = True
        encoder.embeddings_project = select_linear(project, index, 0)
