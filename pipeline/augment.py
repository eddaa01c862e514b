"""Small-data distillation: more text for the student to learn the teacher from than the labels cover.

With a few hundred labels the student sees the teacher's function at a few hundred points. As
TinyBERT does (Jiao et al. 2020, "data augmentation"), new texts are made from the training texts
and the teacher scores them; the student learns from those scores (the KL term only: they have no
label). TinyBERT replaces words with a masked language model's guesses; the built-in teacher has no
MLM head, so here each word of a copy is dropped or replaced by a word drawn from the training
corpus (unigram frequency), which keeps the vocabulary the pruned tokenizer is built on. Texts the
user supplies without labels (`data.unlabeled`) come first; both are bounded by
`distill.transfer_max_examples`. Whether it helps is measured (README, "Training on your own data"),
and `DATA_SIZE_DEFAULTS` turns it on only where it did.

Reads `distill.augment`, `distill.transfer_max_examples`, `data.unlabeled`, `data.text_column`, `seed`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import DataError
from edgepipe.pipeline import data as data_stage

P_DROP = 0.1
P_REPLACE = 0.15


def augment(texts: list[str], copies: int, seed: int) -> list[str]:
    """`copies` variants of every text, word dropout + replacement, deterministic in `seed`; variants
    equal to their source (short texts) are skipped."""
    rng = np.random.default_rng(seed)
    words_of = [t.split() for t in texts]
    counts = Counter(w for words in words_of for w in words)
    vocab = list(counts)
    weights = np.asarray([counts[w] for w in vocab], dtype=np.float64)
    weights /= weights.sum()
    out = []
    for _ in range(copies):
        for words in words_of:
            draw = rng.random(len(words))
            replacements = rng.choice(len(vocab), size=len(words), p=weights)
            new = [
                vocab[r] if d < P_REPLACE else w
                for w, d, r in zip(words, draw, replacements)
                if not P_REPLACE <= d < P_REPLACE + P_DROP
            ]
            if new and new != words:
                out.append(" ".join(new))
    return out


def read_unlabeled(path: Path, text_column: str, delimiter: str | None = None) -> list[str]:
    """Texts of a .txt file (one per line) or a CSV/JSONL file's text column."""
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise DataError(f"unlabeled file {path} does not exist; pass an existing file to --unlabeled") from None
        except UnicodeDecodeError:
            raise DataError(f"unlabeled file {path} is not UTF-8; re-save it as UTF-8") from None
        return [" ".join(line.split()) for line in lines if line.strip()]
    table = data_stage.read_rows(path, delimiter, (text_column,))
    if text_column not in table.columns:
        raise DataError(
            f"unlabeled file {path} has no column {text_column!r} (columns: {', '.join(table.columns)}); "
            "name it like data.text_column, or pass a .txt file with one text per line"
        )
    texts = (" ".join(str(r.get(text_column) or "").split()) for r in table.rows)
    return [t for t in texts if t]


def transfer_texts(
    dataset: data_stage.Dataset,
    *,
    copies: int,
    max_examples: int,
    unlabeled: Path | None,
    text_column: str,
    delimiter: str | None,
    seed: int,
) -> tuple[list[str], dict[str, Any]]:
    """The texts added to the labelled training split for distillation, and what was added."""
    if dataset.inputs != "text":  # a transfer example would be a pair or tagged words: not made (yet)
        kind = {"text_pair": "pairs", "words": "tagged sentences"}[dataset.inputs]
        if unlabeled is not None:
            raise DataError(
                f"--unlabeled {unlabeled} holds single texts, but task {dataset.task}'s examples are {kind}; "
                "drop --unlabeled for this task"
            )
        report = {"labelled": len(dataset.texts["train"])}
        return [], report | ({"augment_skipped": f"{kind}: no word-level variants"} if copies else {})
    known = {t for split in dataset.texts.values() for t in split}
    held_out = set(dataset.texts["val"]) | set(dataset.texts["test"])
    report: dict[str, Any] = {"labelled": len(dataset.texts["train"])}
    extra: list[str] = []
    if unlabeled is not None:
        texts = read_unlabeled(Path(unlabeled), text_column, delimiter)
        fresh = list(dict.fromkeys(t for t in texts if t not in known))
        report["unlabeled"] = {
            "path": str(unlabeled),
            "rows": len(texts),
            "in_val_or_test": sum(t in held_out for t in set(texts)),
            "used": min(len(fresh), max_examples),
        }
        extra = fresh[:max_examples]
    if copies > 0 and len(extra) < max_examples:
        made = [t for t in dict.fromkeys(augment(dataset.texts["train"], copies, seed)) if t not in known]
        used = made[: max_examples - len(extra)]
        report["augmented"] = {
            "copies": copies,
            "made": len(made),
            "used": len(used),
            "p_drop": P_DROP,
            "p_replace": P_REPLACE,
        }
        extra += used
    report["transfer"] = report["labelled"] + len(extra)
    return extra, report
