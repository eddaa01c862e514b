"""WordPiece vocabularies (BERT, MiniLM; later DistilBERT, ELECTRA): pruning and the app's tokenizer card.

The word-embedding table is most of a small student. Kept: every token the training corpus
uses, the special tokens, and every single-character piece with its `##` form, so any word
still splits into known pieces instead of [UNK]. The reduced vocab.txt ships with the model;
the app-side tokenizer then produces the new ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepipe.arch.base import Vocabulary
from edgepipe.rundir import write_bytes_atomic


def read_vocab(directory: Path) -> list[str]:
    return (Path(directory) / "vocab.txt").read_text(encoding="utf-8").splitlines()


def corpus_token_ids(tokenizer: Any, texts: list[str], vocab: list[str]) -> list[int]:
    """Old ids to keep: corpus tokens, special tokens, single characters and their ## forms."""
    used: set[int] = set()
    for start in range(0, len(texts), 1024):
        for ids in tokenizer(texts[start : start + 1024], add_special_tokens=False)["input_ids"]:
            used.update(ids)
    used.update(tokenizer.all_special_ids)
    used.update(i for i, t in enumerate(vocab) if len(t) == 1 or (t.startswith("##") and len(t) == 3))
    return sorted(used)


def write_tokenizer(directory: Path, vocab: list[str], source_tokenizer: Any) -> Any:
    """vocab.txt (for apps and the Task Library) + tokenizer.json with the same normalisation.

    transformers 5: `BertTokenizer(vocab=...)` takes the vocabulary; `vocab_file=` is silently ignored."""
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(directory / "vocab.txt", ("\n".join(vocab) + "\n").encode("utf-8"))
    tok = BertTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        do_lower_case=lowercase(source_tokenizer),
        model_max_length=source_tokenizer.model_max_length,
    )
    tok.save_pretrained(str(directory))
    return tok


def prune(tokenizer: Any, texts: list[str], source: Path, directory: Path) -> Vocabulary:
    vocab = read_vocab(source)
    keep = corpus_token_ids(tokenizer, texts, vocab)
    return Vocabulary(keep, len(vocab), write_tokenizer(directory, [vocab[i] for i in keep], tokenizer))


def lowercase(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "do_lower_case", True))


def card(tokenizer: Any, directory: Path) -> dict[str, Any]:
    """What devices/standalone/app_check.py (and an app) need to reproduce the ids."""
    return {
        "type": "bert_wordpiece",
        "vocab": "vocab.txt",
        "vocab_size": len(read_vocab(directory)),
        "lowercase": lowercase(tokenizer),
        "strip_accents": None,
        "cls": "[CLS]",
        "sep": "[SEP]",
        "pad": "[PAD]",
        "unk": "[UNK]",
        "segment_ids": "all zeros (single sentence)",
    }
