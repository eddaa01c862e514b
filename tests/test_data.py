import codecs
import gzip
import json

import numpy as np
import pytest

from edgepipe.config import DataConfig, build_config
from edgepipe.errors import ConfigError, DataError
from edgepipe.model.load import load_tokenizer, teacher_source
from edgepipe.pipeline.data import load_dataset


def test_builtin_rotten_tomatoes_split_is_fixed_and_documented():
    ds, report = load_dataset(DataConfig())
    assert report["labels"] == ["fresh", "rotten"]
    assert {s: report["splits"][s]["n"] for s in ("train", "val", "test")} == {"train": 9752, "val": 1000, "test": 2000}
    assert report["dropped"]["duplicate_text"] == 56
    assert report["notes"] == ["dropped 56 rows with a text that repeats an earlier row"]
    # stratified: each split's label counts are within one example of the whole file's proportions
    total = report["label_counts"]
    assert sum(total) == 12752
    for s in ("train", "val", "test"):
        split = report["splits"][s]
        assert [abs(c - split["n"] * t / sum(total)) <= 1 for c, t in zip(split["label_counts"], total)] == [True, True]
    ds2, _ = load_dataset(DataConfig())
    assert ds.texts["test"][:5] == ds2.texts["test"][:5] and ds.key == ds2.key
    assert not set(ds.texts["test"]) & set(ds.texts["train"])


def test_split_seed_changes_the_split_but_not_the_content():
    a, _ = load_dataset(DataConfig())
    b, _ = load_dataset(DataConfig(split_seed=1))
    assert a.key != b.key and sorted(a.texts["test"] + a.texts["val"] + a.texts["train"]) == sorted(
        b.texts["test"] + b.texts["val"] + b.texts["train"]
    )


def test_tokenized_arrays_match_what_runtimes_take():
    ds, _ = load_dataset(DataConfig(train_limit=10))
    splits = ds.tokenize(load_tokenizer(teacher_source(None)), 64)
    test = splits["test"]
    assert test.input_ids.shape == (2000, 64) and test.input_ids.dtype == np.int64
    assert (test.input_ids[:, 0] == 101).all()  # [CLS]
    assert set(np.unique(test.attention_mask)) <= {0, 1}
    assert len(splits["train"]) == 10


def test_user_csv_with_integer_labels_keeps_their_values(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"example number {i},{i % 3}\n" for i in range(90)))
    ds, report = load_dataset(DataConfig(path=f))
    assert report["labels"] == ["0", "1", "2"]
    assert "note" in report  # 90 rows are too few for 1000/2000: 10%/20% used
    assert report["note"] in report["notes"]  # ... and printed by the CLI
    assert report["splits"]["val"]["n"] == 9 and report["splits"]["test"]["n"] == 18


def test_jsonl_and_split_column(tmp_path):
    import json

    f = tmp_path / "d.jsonl"
    rows = [
        {"sentence": f"s{i}", "y": "a" if i % 2 else "b", "part": ["train", "val", "test"][i % 3]} for i in range(30)
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    ds, report = load_dataset(DataConfig(path=f, text_column="sentence", label_column="y", split_column="part"))
    assert [report["splits"][s]["n"] for s in ("train", "val", "test")] == [10, 10, 10]


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"sentence,label\nhi,1\n", "has no column 'text' (columns: sentence, label)"),
        (b"", "is empty"),
        (b"text,label\n", "has a header but no rows"),
        (b"text,label\na,x\nb,x\nc,x\n", "single class"),
        (b"text,label\ncaf\xe9,1\nb,0\n", "is not UTF-8 (bad byte at line 2); save it as CSV UTF-8"),
        # an .xlsx renamed to .csv: the zip container is recognised, not reported as bad UTF-8
        (b"PK\x03\x04\x14\x00\x06\x00", "is a spreadsheet; save it as CSV UTF-8 (File > Save As) and pass the .csv"),
        # the crash this replaced: `;`-separated texts with commas and a column named otherwise (TypeError)
        (b"review;label\nGreat, really great;pos\nBad, bad;neg\n", "has no column 'text' (columns: review, label)"),
        # every row has an unquoted comma in its text: nothing is left, and the message says why
        (b"text,label\nGreat, really great,pos\nBad, bad,neg\n", "(dropped: 2 with more fields than the header)"),
    ],
)
def test_bad_data_files_give_actionable_errors(tmp_path, content, needle):
    f = tmp_path / "d.csv"
    f.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(path=f))
    assert needle in str(e.value)


def test_missing_data_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(path=tmp_path / "nope.csv"))


def rows_of(ds) -> list[tuple[str, str]]:
    """Every (text, label) the dataset kept, over all splits, in a fixed order."""
    return sorted((t, ds.labels[y]) for s in ("train", "val", "test") for t, y in zip(ds.texts[s], ds.label_ids[s]))


SEMI = b"text;label\nGreat, really great;pos\nBad, bad, bad;neg\nFine, I guess;pos\n"
SEMI_ROWS = [("Bad, bad, bad", "neg"), ("Fine, I guess", "pos"), ("Great, really great", "pos")]
GUESSED_SEMI = "read the file as ';'-separated (set data.delimiter to choose)"

# (id, file name, bytes as an export writes them, DataConfig overrides, kept (text, label) rows, notes expected)
FILES = [
    ("utf8-bom", "d.csv", b"\xef\xbb\xbftext,label\nhello,pos\nbye,neg\n", {}, [("bye", "neg"), ("hello", "pos")], []),
    ("semicolon-commas-in-texts", "d.csv", SEMI, {}, SEMI_ROWS, [GUESSED_SEMI]),
    ("semicolon-gz", "d.csv.gz", gzip.compress(SEMI), {}, SEMI_ROWS, [GUESSED_SEMI]),
    (
        "tab-in-csv",
        "d.csv",
        b"text\tlabel\nGreat, really; great\tpos\nbad\tneg\n",
        {},
        [("Great, really; great", "pos"), ("bad", "neg")],
        ["read the file as '\\t'-separated (set data.delimiter to choose)"],
    ),
    ("tsv", "d.tsv", b"text\tlabel\na, b; c | d\tpos\nbad\tneg\n", {}, [("a, b; c | d", "pos"), ("bad", "neg")], []),
    (
        "pipe",
        "d.txt",
        b"text|label\na, b; c|pos\nbad|neg\n",
        {},
        [("a, b; c", "pos"), ("bad", "neg")],
        ["read the file as '|'-separated (set data.delimiter to choose)"],
    ),
    ("crlf", "d.csv", b"text,label\r\nhello,pos\r\nbye,neg\r\n", {}, [("bye", "neg"), ("hello", "pos")], []),
    (
        "quoted-newline-and-quotes",
        "d.csv",
        b'text,label\n"line one\r\nline two",pos\n"a, ""quoted"" b",neg\nplain,pos\n',
        {},
        [('a, "quoted" b', "neg"), ("line one line two", "pos"), ("plain", "pos")],
        [],
    ),
    (
        "extra-columns",
        "d.csv",
        b"id,text,source,label,score\n1,hello,web,pos,0.9\n2,bye,app,neg,0.1\n",
        {},
        [("bye", "neg"), ("hello", "pos")],
        [],
    ),
    (
        "header-spaces-and-trailing-empty-fields",
        "d.csv",
        b"text , label\nhello,pos,,\nbye,neg\n",
        {},
        [("bye", "neg"), ("hello", "pos")],
        [],
    ),
    (
        "numeric-labels",
        "d.csv",
        b"text,label\na,0\nb,1\nc,2\nd,1\n",
        {},
        [("a", "0"), ("b", "1"), ("c", "2"), ("d", "1")],
        [],
    ),
    (
        "empty-labels-and-texts",
        "d.csv",
        b"text,label\na,pos\nb,\nc,neg\n,neg\nd,  \ne,pos\ne,neg\n",
        {},
        [("a", "pos"), ("c", "neg"), ("e", "pos")],
        [
            "dropped 1 row with an empty text",
            "dropped 2 rows with an empty label",
            "dropped 1 row with a text that repeats an earlier row",
        ],
    ),
    (
        "unquoted-delimiter-in-a-text",
        "d.csv",
        b"text,label\nGreat, really great,pos\nbad,neg\nok,pos\n",
        {},
        [("bad", "neg"), ("ok", "pos")],
        [
            "dropped 1 row with more fields than the header (first at line 2): "
            "quote texts that contain ',', or set data.delimiter"
        ],
    ),
    (
        "labels-with-spaces",
        "d.csv",
        b'text,label\na, pos\nb,"neg "\nc,pos\n',
        {},
        [("a", "pos"), ("b", "neg"), ("c", "pos")],
        ["stripped spaces around 2 labels (e.g. ' pos')"],
    ),
    (
        "labels-differing-in-case-kept",
        "d.csv",
        b"text,label\na,Pos\nb,pos\nc,neg\nd,NEG\n",
        {},
        [("a", "Pos"), ("b", "pos"), ("c", "neg"), ("d", "NEG")],
        [
            "labels 'NEG' and 'neg', 'Pos' and 'pos' differ only in case and are kept as separate classes; "
            "set data.fold_label_case=true to merge them"
        ],
    ),
    (
        "labels-differing-in-case-folded",
        "d.csv",
        b"text,label\na,Pos\nb,pos\nc,neg\nd,NEG\n",
        {"fold_label_case": True},
        [("a", "pos"), ("b", "pos"), ("c", "neg"), ("d", "neg")],
        [],
    ),
    ("forced-delimiter", "d.csv", SEMI, {"delimiter": ";"}, SEMI_ROWS, []),
    ("forced-delimiter-over-tsv", "d.tsv", SEMI, {"delimiter": ";"}, SEMI_ROWS, []),
    (
        "forced-tab-alias",
        "d.csv",
        b"text\tlabel\na;b\tpos\nc\tneg\n",
        {"delimiter": "\\t"},
        [("a;b", "pos"), ("c", "neg")],
        [],
    ),
    (
        "excel-unicode-text",
        "d.txt",
        codecs.BOM_UTF16_LE + "text\tlabel\r\ncafé, olé\tpos\r\nbad\tneg\r\n".encode("utf-16-le"),
        {},
        [("bad", "neg"), ("café, olé", "pos")],
        ["read the file as '\\t'-separated (set data.delimiter to choose)"],
    ),
]


@pytest.mark.parametrize("name, filename, content, overrides, rows, notes", FILES, ids=[f[0] for f in FILES])
def test_files_as_people_export_them(tmp_path, name, filename, content, overrides, rows, notes):
    f = tmp_path / filename
    f.write_bytes(content)
    ds, report = load_dataset(DataConfig(path=f, **overrides))
    assert rows_of(ds) == rows
    assert report["labels"] == sorted({label for _, label in rows}, key=lambda v: (not v.isdigit(), v))
    assert report["label_counts"] == [sum(label == name for _, label in rows) for name in report["labels"]]
    # files this small also get notes on the split (10%/20% used, classes missing from val/test): not checked here
    split_notes = [report["note"]] + [n for n in report["notes"] if n.startswith("classes missing from a split")]
    assert [n for n in report["notes"] if n not in split_notes] == notes


def test_dropped_rows_are_counted_by_reason(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\na,pos\nb,\nc,neg\n,neg\nd,  \ne,pos\ne,neg\nf,g,h\n")
    _, report = load_dataset(DataConfig(path=f))
    assert report["dropped"] == {
        "empty": 3,
        "empty_text": 1,
        "empty_label": 2,
        "duplicate_text": 1,
        "extra_fields": 1,
    }


def test_label_spaces_and_case_are_in_the_report(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(b"text,label\na,Pos \nb,pos\nc,neg\n")
    _, report = load_dataset(DataConfig(path=f))
    assert report["labels"] == ["Pos", "neg", "pos"]
    assert report["labels_stripped_of_spaces"] == 1
    assert report["labels_differing_in_case"] == [["Pos", "pos"]]
    _, folded = load_dataset(DataConfig(path=f, fold_label_case=True))
    assert folded["labels"] == ["neg", "pos"] and folded["label_counts"] == [1, 2]
    assert "labels_differing_in_case" not in folded


@pytest.mark.parametrize("suffix", [".xlsx", ".xls", ".ods", ".numbers", ".XLSX", ".xlsx.gz"])
def test_spreadsheets_are_refused_with_the_way_to_save_them(tmp_path, suffix):
    f = tmp_path / f"d{suffix}"
    f.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError) as e:
        load_dataset(DataConfig(path=f))
    assert str(e.value) == f"data file {f} is a spreadsheet; save it as CSV UTF-8 (File > Save As) and pass the .csv"


def test_a_wrong_forced_delimiter_names_the_columns_it_found(tmp_path):
    f = tmp_path / "d.csv"
    f.write_bytes(SEMI)
    with pytest.raises(DataError, match=r"has no column 'text', 'label' \(columns: text;label\)"):
        load_dataset(DataConfig(path=f, delimiter=","))


@pytest.mark.parametrize(
    "value, expected",
    [(";", ";"), ("|", "|"), ("\t", "\t"), ("\\t", "\t"), ("tab", "\t"), (None, None)],
)
def test_delimiter_setting(value, expected):
    assert DataConfig(delimiter=value).delimiter == expected


@pytest.mark.parametrize("value", [";;", "", '"', "\n"])
def test_delimiter_must_be_one_character(value):
    with pytest.raises(ConfigError, match="data.delimiter: must be one character"):
        build_config({"data.delimiter": value})


def labelled_csv(path, counts: dict[str, int]):
    """A CSV sorted by label (as exports often are): `counts[label]` rows of each."""
    lines = [f"{label} example {i},{label}\n" for label, n in counts.items() for i in range(n)]
    path.write_text("text,label\n" + "".join(lines))
    return path


def test_split_is_stratified_and_keeps_the_requested_sizes(tmp_path):
    f = labelled_csv(tmp_path / "d.csv", {"a": 60, "b": 20, "c": 3, "d": 2, "e": 1})
    cfg = DataConfig(path=f, val_size=0.1, test_size=0.2)
    ds, report = load_dataset(cfg)
    sizes = {s: report["splits"][s]["n"] for s in ("train", "val", "test")}
    assert sizes == {"train": 60, "val": 9, "test": 17}  # 86 rows: round(8.6) and round(17.2)
    counts = {s: report["splits"][s]["label_counts"] for s in ("train", "val", "test")}
    # a and b in proportion (within one example); c (3 rows) in every split; d and e go to train first
    assert counts == {"train": [42, 14, 1, 2, 1], "val": [6, 2, 1, 0, 0], "test": [12, 4, 1, 0, 0]}
    assert report["classes_missing_from_splits"] == {"d": ["val", "test"], "e": ["val", "test"]}
    assert report["notes"] == [
        "classes missing from a split: 'd' (from val, test), 'e' (from val, test); add examples of them or remove them"
    ]
    again, _ = load_dataset(cfg)
    other, _ = load_dataset(DataConfig(path=f, val_size=0.1, test_size=0.2, split_seed=1))
    assert again.key == ds.key and other.key != ds.key
    assert other.report["splits"]["test"]["label_counts"] == counts["test"]  # same allocation, other rows


@pytest.mark.parametrize("seed", range(30))
def test_split_sizes_are_exact_for_any_class_mix(tmp_path, seed):
    rng = np.random.default_rng(seed)
    counts = {"big": 40} | {f"c{i}": int(n) for i, n in enumerate(rng.integers(1, 80, size=rng.integers(1, 12)))}
    n = sum(counts.values())
    val, test = int(rng.integers(1, n // 4 + 1)), int(rng.integers(1, n // 4 + 1))
    _, report = load_dataset(DataConfig(path=labelled_csv(tmp_path / "d.csv", counts), val_size=val, test_size=test))
    splits = report["splits"]
    assert (splits["val"]["n"], splits["test"]["n"], splits["train"]["n"]) == (val, test, n - val - test)
    for c, label in enumerate(report["labels"]):
        size = counts[label]
        per_split = [splits[s]["label_counts"][c] for s in ("train", "val", "test")]
        assert sum(per_split) == size
        if size >= 3 and len(counts) <= min(val, test):
            assert min(per_split) >= 1, (size, per_split)


def test_train_limit_takes_every_class_in_proportion(tmp_path):
    f = labelled_csv(tmp_path / "d.csv", {"a": 40, "b": 40})
    _, report = load_dataset(DataConfig(path=f, val_size=10, test_size=10, train_limit=10))
    assert report["splits"]["train"] == {"n": 10, "label_counts": [5, 5]}
    # with a split column the file's order is kept, yet a file sorted by label still gives both labels
    g = tmp_path / "g.csv"
    rows = [f"a{i},a,train\n" for i in range(20)] + [f"b{i},b,train\n" for i in range(20)]
    g.write_text("text,label,part\n" + "".join(rows) + "va,a,val\nvb,b,val\nta,a,test\ntb,b,test\n")
    ds, report = load_dataset(DataConfig(path=g, split_column="part", train_limit=4))
    assert ds.texts["train"] == ["a0", "a1", "b0", "b1"]


def test_compress_and_export_prints_the_data_notes(tmp_path, monkeypatch):
    """The notes reach the terminal, brackets in labels included (rich would read [x] as markup)."""
    import io

    from rich.console import Console

    from edgepipe.app import run as app_run
    from edgepipe.progress import Silent

    class Stop(Exception):
        pass

    def stop_before_the_teacher(*args, **kwargs):
        raise Stop

    class Recorder(Silent):
        def __init__(self):
            self.lines = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    f = tmp_path / "d.csv"
    f.write_bytes(b"text;label\nGreat, really great;[pos]\nBad, bad;neg\nok;\n")
    monkeypatch.setattr(app_run.Tokenizer, "load", stop_before_the_teacher)
    progress = Recorder()
    cfg = build_config({"data.path": str(f), "export.tflite": False})
    with pytest.raises(Stop):
        app_run.compress_and_export(cfg, tmp_path / "run", tmp_path / "cache", progress)
    console = Console(file=io.StringIO(), width=300)
    for line in progress.lines:
        console.print(line)
    assert console.file.getvalue().splitlines()[:2] == [
        "note: read the file as ';'-separated (set data.delimiter to choose)",
        "note: dropped 1 row with an empty label",
    ]
    assert "[pos]" in console.file.getvalue()  # in the missing-class note


def test_pairs_are_read_deduplicated_and_framed_with_segment_ids(tmp_path):
    """text_a,text_b,label: auto-detected as pairs; a pair (not a text) is what repeats; a row missing
    either text is dropped and counted; BERT frames a pair [CLS] a [SEP] b [SEP] with segment ids 0, 1."""
    rows = ["text_a,text_b,label"]
    rows += [f"question {i},answer {i % 7},{'ab'[i % 2]}" for i in range(60)]
    rows += ["question 0,answer 0,a", "question 0,another answer,b", "question 61,,a"]
    path = tmp_path / "pairs.csv"
    path.write_text("\n".join(rows) + "\n")
    ds, report = load_dataset(DataConfig(path=path, val_size=10, test_size=10))
    assert ds.task == report["task"] == "pair_classification" and ds.pairs
    texts = ds.texts["train"] + ds.texts["val"] + ds.texts["test"]
    assert len(texts) == 61 and ("question 0", "another answer") in texts  # same a, other b: another pair
    assert report["dropped"]["duplicate_text"] == 1 and report["dropped"]["empty_text"] == 1
    assert sorted(ds.flat_texts("test")) == sorted(t for pair in ds.texts["test"] for t in pair)
    tok = load_tokenizer(teacher_source(None))
    split = ds.tokenize(tok, 16).test
    a, b = ds.texts["test"][0]
    expected = tok(a, b, max_length=16, truncation="longest_first", padding="max_length")
    assert split.input_ids[0].tolist() == expected["input_ids"]
    sep = tok.sep_token_id
    ids, types = split.input_ids[0].tolist(), split.token_type_ids[0].tolist()
    first_sep = ids.index(sep)
    assert set(types[: first_sep + 1]) == {0} and types[first_sep + 1] == 1 and ids.count(sep) == 2


def test_multi_label_cells_become_a_multi_hot_matrix_split_by_the_rarest_label(tmp_path):
    """text,labels with `|` (spaces and repeats tolerated): auto-detected as multi-label; every split holds
    the rare label (drawn by each row's rarest label); counts count a text once per label."""
    rows = ["text,labels"]
    for i in range(90):
        cell = ["news|sport", "news", " sport | news |news", "weather|news"][i % 4] if i % 15 else "rare|news"
        rows.append(f"text {i},{cell}")
    path = tmp_path / "ml.csv"
    path.write_text("\n".join(rows) + "\n")
    ds, report = load_dataset(DataConfig(path=path, val_size=12, test_size=18))
    assert ds.task == "multi_label" and report["labels"] == ["news", "rare", "sport", "weather"]
    assert ds.label_ids["train"].shape[1] == 4 and set(np.unique(ds.label_ids["train"])) == {0, 1}
    assert report["label_counts"] == [90, 6, 42, 20]  # news in every row; rows 0, 15, ...: rare; i % 4 == 3: weather
    for split in ("train", "val", "test"):
        assert report["splits"][split]["label_counts"][1] >= 1, split  # the rare label reaches every split
    i = ds.texts["train"].index("text 2")
    assert ds.label_ids["train"][i].tolist() == [1, 0, 1, 0]  # " sport | news |news"
    ds.extra = ["an extra text"]
    tokens = ds.tokenize(load_tokenizer(teacher_source(None)), 16)
    assert tokens.transfer.labels.shape == (len(ds.texts["train"]) + 1, 4)
    assert (tokens.transfer.labels[-1] == -1).all()  # UNLABELED in every slot: the KD term only


def test_texts_alone_are_embedding_data_and_the_built_in_labels_only_stratify():
    """A `text`-only file is embedding data (no labels: the teacher's outputs become the targets); the
    built-in data under --task embedding keeps its split (stratified by fresh/rotten) and no labels."""
    builtin, _ = load_dataset(DataConfig())
    ds, report = load_dataset(DataConfig(), "embedding")
    assert ds.task == report["task"] == "embedding" and ds.labels == [] and report["labels"] == []
    assert ds.texts == builtin.texts  # the same split as the classification task's
    assert ds.label_ids["test"].shape == (2000, 0)
    ds.set_targets({s: np.ones((len(ds.texts[s]), 3), dtype=np.float32) for s in ("train", "val", "test")})
    tokens = ds.tokenize(load_tokenizer(teacher_source(None)), 16)
    assert tokens.test.labels.dtype == np.float32 and tokens.test.labels.shape == (2000, 3)


def test_a_text_only_file_is_read_as_embedding_data(tmp_path):
    path = tmp_path / "texts.csv"
    path.write_text("text\n" + "".join(f"sentence number {i}\n" for i in range(50)) + "sentence number 3\n")
    ds, report = load_dataset(DataConfig(path=path, val_size=5, test_size=10))
    assert ds.task == "embedding" and report["dropped"]["duplicate_text"] == 1
    assert sum(len(ds.texts[s]) for s in ("train", "val", "test")) == 50


def test_conll_and_jsonl_tagged_sentences_are_read_alike(tmp_path):
    """CoNLL (word ... tag, a blank or whitespace-only line between sentences, -DOCSTART- skipped, CRLF)
    and JSONL rows give the same sentences; tags map to the BIO layout; words' first sub-words carry them."""
    sentences = [(["Anna", "lives", "in", "Oslo", str(i)], ["B-PER", "O", "O", "B-LOC", "O"]) for i in range(30)]
    conll = "-DOCSTART- O\r\n\r\n" + "\t\r\n".join(
        "".join(f"{w} NNP {t}\r\n" for w, t in zip(words, tags)) for words, tags in sentences
    )
    (tmp_path / "d.conll").write_text(conll)
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"tokens": w, "tags": t}) + "\n" for w, t in sentences)
        + json.dumps({"tokens": sentences[0][0], "tags": sentences[0][1]})  # a repeat
        + "\n"
    )
    a, ra = load_dataset(DataConfig(path=tmp_path / "d.conll", val_size=5, test_size=5))
    b, rb = load_dataset(DataConfig(path=tmp_path / "d.jsonl", val_size=5, test_size=5))
    assert a.task == b.task == "token_classification" and a.texts == b.texts and rb["dropped"]["duplicate_text"] == 1
    assert a.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"] and ra["entity_counts"] == [30, 30]
    split = a.tokenize(load_tokenizer(teacher_source(None)), 16).test
    words, tags = a.texts["test"][0], a.label_ids["test"][0]
    got = split.labels[0][split.labels[0] != -100].tolist()
    assert got == list(tags) == [3, 0, 0, 1, 0] and len(words) == 5


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"tokens": ["a", "b"], "tags": ["O"]}, "has 1 tags for 2 tokens; give one tag per token"),
        ({"tokens": ["a"], "tags": ["PER"]}, "has tag 'PER'; tags must be BIO"),
        ({"tokens": "a b", "tags": ["O", "O"]}, "must be lists (JSON arrays)"),
    ],
)
def test_bad_tagged_rows_are_named(tmp_path, row, needle):
    path = tmp_path / "d.jsonl"
    good = {"tokens": ["Anna"], "tags": ["B-PER"]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match="row 2") as e:
        load_dataset(DataConfig(path=path))
    assert needle in str(e.value)
