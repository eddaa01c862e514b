"""SentencePiece Unigram vocabularies (XLM-R, DeBERTa-v3): pruning and the app's tokenizer card.

Kept: every piece the corpus uses, special tokens and <unk>, every single-character piece (so any
word still splits into known pieces) and, with byte fallback, the <0xNN> pieces. Unigram picks the
most likely segmentation over the vocabulary; the corpus's best segmentations use only kept pieces,
and removing others cannot make a better one, so its texts tokenize to the same pieces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgepipe.arch import tokenizer_json
from edgepipe.arch.base import Vocabulary

BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")


def prune(tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
    j = tokenizer_json.load(tokenizer)
    model = j["model"]
    if model.get("type") != "Unigram":
        raise ValueError(f"expected a Unigram tokenizer.json, found {model.get('type')!r}")
    pieces: list[list[Any]] = model["vocab"]
    keep = tokenizer_json.corpus_ids(tokenizer, texts, j)
    if model.get("unk_id") is not None:
        keep.add(int(model["unk_id"]))
    byte_fallback = bool(model.get("byte_fallback"))
    for i, (piece, _score) in enumerate(pieces):
        if len(piece) == 1 or (byte_fallback and BYTE_PIECE.match(piece)):
            keep.add(i)
    kept_ids = sorted(keep)
    new_id = {old: new for new, old in enumerate(kept_ids)}
    model["vocab"] = [pieces[i] for i in kept_ids if i < len(pieces)]
    if model.get("unk_id") is not None:
        model["unk_id"] = new_id[int(model["unk_id"])]
    tokenizer_json.renumber_specials(j, new_id)
    return Vocabulary(kept_ids, len(tokenizer), tokenizer_json.save(j, source, directory))


def card(tokenizer: Any, directory: Path) -> dict[str, Any]:
    return tokenizer_json.card("sentencepiece_unigram", tokenizer)
