"""Structural edits of a BERT encoder: remove heads, FFN neurons, layers, vocabulary rows.

Written by hand because transformers 5 dropped `prune_heads` and no maintained library
handles per-layer head counts *and* a save format that rebuilds them: torch-pruning
works only with the residual stream ignored, and a pruned model with non-uniform head
counts cannot round-trip through `save_pretrained` (its config is strict). Here the
shape of every layer is a small JSON `shape` saved next to the safetensors weights;
`apply_shape` rebuilds an empty model of that shape before the weights are loaded.

A layer pruned to zero heads (or zero neurons) keeps its residual path: the block
then computes LayerNorm(x + bias), exactly what the full block computes when every
head's output is zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new Linear keeping rows (dim=0, output features) or columns (dim=1, input features)."""
    w = linear.weight.detach().index_select(dim, index).clone()
    out_f, in_f = w.shape
    new = nn.Linear(in_f, out_f, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach()[index])
    return new


def head_count(layer: nn.Module) -> int:
    att = layer.attention
    return 0 if isinstance(att, NoAttention) else att.self.query.out_features // att.self.attention_head_size


def ffn_count(layer: nn.Module) -> int:
    return 0 if isinstance(layer.output, NoFeedForward) else layer.intermediate.dense.out_features


def keep_heads(layer: nn.Module, heads: list[int]) -> None:
    att = layer.attention
    if isinstance(att, NoAttention):
        if heads:
            raise ValueError("cannot restore heads of a layer pruned to zero heads")
        return
    hidden = att.output.dense.out_features
    if not heads:
        repl = NoAttention(hidden, att.output.LayerNorm.eps)
        with torch.no_grad():
            repl.bias.copy_(att.output.dense.bias)
            repl.LayerNorm.load_state_dict(att.output.LayerNorm.state_dict())
        layer.attention = repl
        return
    sa = att.self
    d = sa.attention_head_size
    index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(heads)])
    sa.query, sa.key, sa.value = (_select(m, index, 0) for m in (sa.query, sa.key, sa.value))
    att.output.dense = _select(att.output.dense, index, 1)
    sa.num_attention_heads = len(heads)
    sa.all_head_size = len(heads) * d


def keep_neurons(layer: nn.Module, neurons: list[int]) -> None:
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
    layer.intermediate.dense = _select(layer.intermediate.dense, index, 0)
    layer.output.dense = _select(layer.output.dense, index, 1)


def keep_layers(encoder: nn.Module, layers: list[int]) -> None:
    encoder.encoder.layer = nn.ModuleList([encoder.encoder.layer[i] for i in sorted(layers)])
    encoder.config.num_hidden_layers = len(layers)
    for i, layer in enumerate(encoder.encoder.layer):
        layer.attention.self.layer_idx = i if hasattr(layer.attention, "self") else None


def keep_tokens(encoder: nn.Module, token_ids: list[int]) -> None:
    emb = encoder.embeddings.word_embeddings
    index = torch.tensor(sorted(token_ids), dtype=torch.long)
    new = nn.Embedding(len(index), emb.embedding_dim, padding_idx=0)
    with torch.no_grad():
        new.weight.copy_(emb.weight.detach()[index])
    encoder.embeddings.word_embeddings = new
    encoder.config.vocab_size = len(index)


def shape_of(encoder: nn.Module) -> dict[str, Any]:
    layers = encoder.encoder.layer
    return {"heads": [head_count(l) for l in layers], "ffn": [ffn_count(l) for l in layers]}


def apply_shape(encoder: nn.Module, shape: dict[str, Any]) -> None:
    """Give a freshly built encoder the per-layer shape of a pruned one (weights loaded after)."""
    for layer, h, f in zip(encoder.encoder.layer, shape["heads"], shape["ffn"]):
        if h != head_count(layer):
            keep_heads(layer, list(range(h)))
        if f != ffn_count(layer):
            keep_neurons(layer, list(range(f)))


def count_macs(encoder: nn.Module, seq_len: int, num_labels: int = 2) -> dict[str, int]:
    """Multiply-accumulates of one sequence of `seq_len` tokens (embedding lookups are free)."""
    c = encoder.config
    hidden = c.hidden_size
    attention = ffn = 0
    for layer in encoder.encoder.layer:
        h = head_count(layer)
        d = hidden // c.num_attention_heads
        width = h * d
        attention += 4 * seq_len * hidden * width + 2 * seq_len * seq_len * width
        ffn += 2 * seq_len * hidden * ffn_count(layer)
    head = hidden * num_labels + (hidden * hidden if getattr(encoder, "pooler", None) is not None else 0)
    return {"attention": attention, "ffn": ffn, "head": head, "total": attention + ffn + head}
