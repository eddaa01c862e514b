import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.errors import DataError
from edgepipe.model.load import load_tokenizer, teacher_source
from edgepipe.pipeline.data import load_dataset


def test_builtin_rotten_tomatoes_split_is_fixed_and_documented():
    ds, report = load_dataset(DataConfig())
    assert report["labels"] == ["fresh", "rotten"]
    assert {s: report["splits"][s]["n"] for s in ("train", "val", "test")} == {"train": 9752, "val": 1000, "test": 2000}
    assert report["dropped"]["duplicate_text"] == 56
    assert sum(report["splits"]["test"]["label_counts"]) == 2000
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
        (b"text,label\ncaf\xe9,1\nb,0\n", "is not UTF-8 (bad byte at line 2)"),
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
