"""Structural edits of an encoder: remove heads, FFN neurons, layers, vocabulary rows.

The architecture (edgepipe.arch) does each edit on its own modules; this module plans and
records them. The shape of every layer (heads and FFN neurons kept) is a small JSON `shape`
saved next to the safetensors weights; `apply_shape` rebuilds an empty model of that shape
before the weights are loaded, so a pruned model round-trips without a custom config class.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgepipe.arch.base import Architecture


def shape_of(arch: Architecture, encoder: nn.Module) -> dict[str, list[int]]:
    layers = arch.layers(encoder)
    return {"heads": [arch.head_count(layer) for layer in layers], "ffn": [arch.ffn_count(layer) for layer in layers]}


def apply_shape(arch: Architecture, encoder: nn.Module, shape: dict[str, Any]) -> None:
    """Give a freshly built encoder the per-layer shape of a pruned one (weights loaded after)."""
    for layer, h, f in zip(arch.layers(encoder), shape["heads"], shape["ffn"]):
        if h > arch.head_count(layer):  # a width-pruned config counts fewer heads than a layer may keep
            arch.grow_heads(layer, h)
        elif h != arch.head_count(layer):
            arch.keep_heads(layer, list(range(h)))
        if f != arch.ffn_count(layer):
            arch.keep_neurons(layer, list(range(f)))


def apply_plan(model: nn.Module, plan: dict[str, Any]) -> nn.Module:
    """A physically smaller copy (removed rows/columns are gone, not zeroed): `plan` names the layers,
    per kept layer the heads and FFN neurons, and (`hidden`, optional) the hidden dimensions that
    survive, with the gains of the residual stream's normalisations (`norm_gain`)."""
    pruned = copy.deepcopy(model)
    pruned.key = None  # a different model from the one it was cut from
    arch = pruned.arch
    arch.keep_layers(pruned.encoder, plan["layers"])
    for layer, heads, ffn in zip(arch.layers(pruned.encoder), plan["heads"], plan["ffn"]):
        arch.keep_heads(layer, heads)
        arch.keep_neurons(layer, ffn)
    if plan.get("hidden") is not None:
        arch.keep_hidden(pruned.encoder, plan["hidden"], plan["norm_gain"])
        pruned.head = pruned.task.keep_head_inputs(pruned.head, torch.tensor(sorted(plan["hidden"])))
    return pruned


def count_macs(arch: Architecture, encoder: nn.Module, seq_len: int, num_outputs: int = 2) -> dict[str, int]:
    """Multiply-accumulates of one sequence of `seq_len` tokens (embedding lookups are free)."""
    d = arch.dims(encoder.config)
    hidden = d.hidden
    attention = ffn = 0
    for layer in arch.layers(encoder):
        width = arch.head_count(layer) * d.head_dim
        attention += 4 * seq_len * hidden * width + 2 * seq_len * seq_len * width
        ffn += arch.ffn_matrices * seq_len * hidden * arch.ffn_count(layer)
    head = hidden * num_outputs + (hidden * hidden if arch.has_pooler(encoder) else 0)
    return {"attention": attention, "ffn": ffn, "head": head, "total": attention + ffn + head}
