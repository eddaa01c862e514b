"""Byte-level BPE vocabularies (RoBERTa): pruning and the app's tokenizer card.

Kept: every piece the corpus uses, special tokens, the 256 single-byte symbols (so any text still
tokenizes, byte by byte at worst), and the merges that build each kept piece, closed under their
parts. Dropped merges are exactly those that never fired on the corpus, so its texts tokenize to
the same pieces; other text uses the kept merges only and falls back to shorter pieces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.arch import tokenizer_json
from edgepipe.arch.base import Vocabulary


def _merge_pair(merge: str | list[str]) -> tuple[str, str]:
    a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
    return a, b


def prune(tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
    j = tokenizer_json.load(tokenizer)
    model = j["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"expected a BPE tokenizer.json, found {model.get('type')!r}")
    vocab: dict[str, int] = model["vocab"]
    piece = {i: t for t, i in vocab.items()}
    merges = [_merge_pair(m) for m in model["merges"]]
    parts = {}
    for a, b in merges:
        parts.setdefault(a + b, (a, b))
    keep = {piece[i] for i in tokenizer_json.corpus_ids(tokenizer, texts, j) if i in piece}
    keep |= {t for t in vocab if len(t) == 1}
    stack = list(keep)
    while stack:
        for part in parts.get(stack.pop(), ()):
            if part not in keep and part in vocab:
                keep.add(part)
                stack.append(part)
    added = {int(t["id"]) for t in j.get("added_tokens", [])}
    kept_ids = sorted({vocab[t] for t in keep} | added)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    model["vocab"] = {t: new_id[i] for t, i in vocab.items() if i in new_id}
    model["merges"] = [[a, b] for a, b in merges if a in keep and b in keep and a + b in keep]
    tokenizer_json.renumber_specials(j, new_id)
    return Vocabulary(kept_ids, len(tokenizer), tokenizer_json.save(j, source, directory))


def card(tokenizer: Any, directory: Path) -> dict[str, Any]:
    add_prefix_space = bool(getattr(tokenizer, "add_prefix_space", False))
    return tokenizer_json.card("byte_level_bpe", tokenizer, add_prefix_space=add_prefix_space)
