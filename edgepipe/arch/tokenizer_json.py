"""Pruning a Hugging Face `tokenizer.json` (BPE, Unigram) to the pieces a corpus needs.

No library does this (SentencePiece and `tokenizers` can only train a new vocabulary, which would
change the ids the embedding rows belong to), so it is done here on the JSON that `tokenizers`
reads: the kept pieces in their old order get new ids 0..n-1, and every place that names an id
(added tokens, the post-processor's special tokens, `unk_id`) is renumbered. What each family keeps
beyond the corpus, so that every text still tokenizes, is its own module's business (bpe, unigram).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgepipe.rundir import write_bytes_atomic

CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def load(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer's `tokenizers` JSON (from the loaded object: no file needed)."""
    return json.loads(tokenizer.backend_tokenizer.to_str())


def corpus_ids(tokenizer: Any, texts: list[str], j: dict[str, Any]) -> set[int]:
    """Ids the texts use, plus every special and added token (`j`: the tokenizer's JSON, from `load`)."""
    used: set[int] = set()
    for start in range(0, len(texts), 1024):
        for ids in tokenizer(texts[start : start + 1024], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    used.update(tokenizer.all_special_ids)
    used.update(int(t["id"]) for t in j.get("added_tokens", []))
    return used


def renumber_specials(j: dict[str, Any], new_id: dict[int, int]) -> None:
    """Added tokens and post-processor ids follow the new numbering (in place)."""
    for token in j.get("added_tokens") or []:
        token["id"] = new_id[int(token["id"])]

    def processor(p: dict[str, Any] | None) -> None:
        if not p:
            return
        if p.get("type") == "Sequence":
            for q in p.get("processors", []):
                processor(q)
        for name in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
            if isinstance(p.get(name), list):
                p[name][1] = new_id[int(p[name][1])]
        for spec in (p.get("special_tokens") or {}).values():  # TemplateProcessing
            spec["ids"] = [new_id[int(i)] for i in spec.get("ids", [])]

    processor(j.get("post_processor"))


def save(j: dict[str, Any], source: Path, directory: Path) -> Any:
    """tokenizer.json (+ the source's tokenizer_config / special_tokens_map), loaded back through
    transformers: the object the rest of the run tokenizes with."""
    from transformers import AutoTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(directory / "tokenizer.json", json.dumps(j, ensure_ascii=False).encode("utf-8"))
    for name in CONFIG_FILES:
        if (Path(source) / name).is_file():
            shutil.copyfile(Path(source) / name, directory / name)
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


def special_tokens(tokenizer: Any) -> dict[str, str | None]:
    return {
        name: getattr(tokenizer, f"{name}_token", None) for name in ("bos", "eos", "cls", "sep", "pad", "unk", "mask")
    }


def card(family: str, tokenizer: Any, **extra: Any) -> dict[str, Any]:
    """The bundle card of a tokenizer.json family: what app_check.py (and an app) need."""
    return {
        "type": family,
        "tokenizer_json": "tokenizer.json",
        "vocab_size": len(tokenizer),
        **extra,
        **special_tokens(tokenizer),
        "segment_ids": "all zeros (single sentence)",
    }
