"""TFLite export with litert-torch and inference with ai-edge-litert, on a small trained BERT."""

import os
import sys

import numpy as np
import pytest

from conftest import TINY_RUN, run_cli, train_tiny_classifier, write_sentiment_csv
from edgepipe.devices import x86
from edgepipe.errors import DeviceError, ModelError
from edgepipe.export import tflite
from edgepipe.model.train import predict
from edgepipe.runtimes.litert import LiteRTModel

SEQ = 32
BUCKET = 12  # the tiny data's texts are 11-15 tokens: a third are longer
# the real litert-torch conversions (fp32, then PT2E int8 + ai-edge-quantizer) take about a minute
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfl")
    model, splits = train_tiny_classifier(d, seed=3, n=500, held_out=100, seq_len=SEQ)
    fp32, int8 = d / "m.fp32.tflite", d / "m.int8.tflite"
    # with a length signature, as every default run writes them (export.tflite_buckets: 16, 32, ... below seq_len)
    assert tflite.export_tflite_fp32(model, fp32, splits["test"], SEQ, [BUCKET]) == ["serving_default", f"seq_{BUCKET}"]
    report = tflite.export_tflite_int8(model, int8, splits["train"], SEQ, 64, embedding="int4", buckets=[BUCKET])
    return d, model, splits, fp32, int8, report


def test_fp32_parity_and_signature(converted):
    _, model, splits, fp32, _, _ = converted
    assert tflite.check_tflite_parity(model, fp32, splits["test"], SEQ, atol=1e-4)["parity_max_abs"] < 1e-4
    m = LiteRTModel(fp32)
    assert [tuple(d["shape"]) for d in m.inputs] == [(1, SEQ)] * 3 and all(d["dtype"] == np.int32 for d in m.inputs)
    assert np.array_equal(m.predict(splits["test"]).argmax(1), predict(model, splits["test"]).argmax(1))


def short_texts(split, n: int = BUCKET):
    return np.flatnonzero(split.attention_mask.sum(axis=1) <= n)


def test_length_signatures_share_the_weights_and_give_the_default_signatures_outputs(converted, tmp_path):
    """A length signature in the same file: a text that fits it gives the same fp32 outputs through it as padded to
    32 through the default; the file grows by its graph only (the weights are stored once)."""
    _, model, splits, fp32, _, _ = converted
    single = tmp_path / "single.tflite"
    assert tflite.export_tflite_fp32(model, single, splits["test"], SEQ) == ["serving_default"]
    assert 1.0 < fp32.stat().st_size / single.stat().st_size < 1.03
    m = LiteRTModel(fp32)
    assert m.signatures == {"serving_default": SEQ, f"seq_{BUCKET}": BUCKET}
    assert [m.signature_for(w) for w in (1, BUCKET, BUCKET + 1, SEQ, SEQ * 2)] == [f"seq_{BUCKET}"] * 2 + [
        "serving_default"
    ] * 3
    t = splits["test"]
    rows = short_texts(t)
    assert 10 <= len(rows) < len(t)  # both signatures are exercised below
    padded = m.run(t.input_ids[rows], t.attention_mask[rows], t.token_type_ids[rows])  # width 32: the default
    own = m.predict(t)[rows]  # each text at its own length: the length signature
    assert np.abs(padded - own).max() < 1e-4
    assert np.abs(m.predict(t) - predict(model, t)).max() < 1e-4
    # tensor names without Python module paths (90 KB a signature on the default model); inputs keep theirs
    from ai_edge_litert.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model(str(fp32))
    names = [t.name.decode() for g in flat.subgraphs for t in g.tensors]
    assert not [n for n in names if "transformers.models" in n or "edgepipe.model" in n]
    assert {d["name"] for d in m.inputs} == {f"serving_default_args_{i}" for i in range(3)}


def test_int8_length_signatures_are_calibrated_on_the_texts_that_fit_them(converted):
    _, _, splits, fp32, int8, report = converted
    fit = len(short_texts(splits["train"]))
    assert report["signatures"] == ["serving_default", f"seq_{BUCKET}"]
    assert report["calibration_examples_by_signature"] == {"serving_default": 64, f"seq_{BUCKET}": min(64, fit)}
    m = LiteRTModel(int8)
    t = splits["test"]
    rows = short_texts(t)
    padded = m.run(t.input_ids[rows], t.attention_mask[rows], t.token_type_ids[rows]).argmax(1)
    assert (m.predict(t)[rows].argmax(1) == padded).mean() >= 0.95
    # a bucket no training text fits is not written
    tiny = tflite.export_tflite_int8(
        converted[1], converted[0] / "b2.tflite", splits["train"], SEQ, 8, embedding="int8", buckets=[2]
    )
    assert tiny["signatures"] == ["serving_default"] and "2" in tiny["buckets_skipped"]


def test_device_runner_times_each_length_signature(converted, tmp_path):
    """Latency at a signature's own length, and at the texts' own lengths (--seq-len 0): shorter is faster."""
    _, _, splits, _, int8, _ = converted
    splits["test"].save(tmp_path / "eval")
    from edgepipe.measurement import Measurement

    by_len = {
        n: x86.benchmark(int8, tmp_path / "eval", Measurement(runs=30, warmup=3, seq_len=n, accuracy=False))
        for n in (BUCKET, SEQ, 0)
    }
    assert {n: r.seq_len for n, r in by_len.items()} == {BUCKET: BUCKET, SEQ: SEQ, 0: 0}
    with pytest.raises(DeviceError, match=f"takes sequences of {BUCKET} or {SEQ} tokens"):
        x86.benchmark(int8, tmp_path / "eval", Measurement(runs=2, warmup=0, seq_len=BUCKET + 1))


def table_scales(path):
    """(table dtype, scale tensor shape) of the model's [30522, 64] embedding table: LiteRT reports a
    4-bit table as int8 with a separate fp16 scale tensor of one scale per block of 32."""
    details = LiteRTModel(path).interpreter.get_tensor_details()
    tables = [t for t in details if tuple(t["shape"]) == (30522, 64)]
    scales = [tuple(t["shape"]) for t in details if t["name"].endswith("_scales") and t["shape"][0] == 30522]
    return {t["dtype"] for t in tables}, scales


def test_int8_is_small_accurate_and_its_embedding_table_is_4_bit_blocks(converted):
    _, _, splits, fp32, int8, report = converted
    assert report["int8_embedding"] and report["embedding_bits"] == 4 and report["calibration_examples"] == 64
    assert fp32.stat().st_size / int8.stat().st_size > 5.5  # hidden 64: fp16 block scales cost 1/8 of the table
    assert table_scales(int8) == ({np.int8}, [(30522, 2)])
    f, q = LiteRTModel(fp32).predict(splits["test"]), LiteRTModel(int8).predict(splits["test"])
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.95


def test_int8_rows_and_fp32_tables_on_request(converted, tmp_path):
    """The other `quantize.embedding` choices, applied to the fp32 model's EMBEDDING_LOOKUP (seconds)."""
    _, _, splits, fp32, _, _ = converted
    rows, float_table = tmp_path / "rows.tflite", tmp_path / "float.tflite"
    assert tflite.quantize_embedding_lookup(fp32, rows, "int8", 64) == 8
    assert tflite.quantize_embedding_lookup(fp32, float_table, "fp32", 64) is None
    assert table_scales(rows) == ({np.int8}, []) and table_scales(float_table) == ({np.float32}, [])
    # only the table shrinks: 7.8 of 8.2 MB, 4x; its per-row scales and zero points (12 bytes a row) are
    # tensor fields, so each length signature repeats them (0.37 MB here, 2.68x in all)
    assert fp32.stat().st_size / rows.stat().st_size > 2.6
    f, q = LiteRTModel(fp32).predict(splits["test"]), LiteRTModel(rows).predict(splits["test"])
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.95
    assert tflite.quantize_embedding_lookup(fp32, tmp_path / "w.tflite", "int4", 48) == 8  # 48 is not 32k


def test_int8_tflite_respects_the_attention_mask(converted):
    _, _, splits, _, int8, _ = converted
    m = LiteRTModel(int8)
    t = splits["test"]
    changed_pad = changed_real = 0.0
    for i in range(16):
        ids, mask, types = (
            t.input_ids[i : i + 1].copy(),
            t.attention_mask[i : i + 1].copy(),
            t.token_type_ids[i : i + 1],
        )
        base = m.run(ids, mask, types)
        ids2 = ids.copy()
        ids2[mask == 0] = 7592
        changed_pad = max(changed_pad, float(np.abs(m.run(ids2, mask, types) - base).max()))
        mask2 = mask.copy()
        mask2[0, 2:4] = 0
        changed_real = max(changed_real, float(np.abs(m.run(ids, mask2, types) - base).max()))
    assert changed_pad < 1e-4 < 1e-3 < changed_real


def test_device_runner_runs_tflite_with_xnnpack(converted, tmp_path):
    _, _, splits, _, int8, _ = converted
    splits["test"].save(tmp_path / "eval")
    from edgepipe.measurement import Measurement

    r = x86.benchmark(int8, tmp_path / "eval", Measurement(runs=10, warmup=2, seq_len=SEQ))
    assert r.runtime == "litert" and r.delegate == "XNNPACK" and r.n_eval == len(splits["test"]) and r.seq_len == SEQ
    host = LiteRTModel(int8).predict(splits["test"])
    assert r.accuracy == pytest.approx(float((host.argmax(1) == splits["test"].labels).mean()))
    # the runner measures the model's own fixed length: another one is refused, not silently recorded
    with pytest.raises(DeviceError, match=f"takes sequences of {BUCKET} or {SEQ} tokens"):
        x86.benchmark(int8, tmp_path / "eval", Measurement(runs=2, warmup=0, seq_len=SEQ * 2))
    assert (
        x86.benchmark(int8, tmp_path / "eval", Measurement(runs=2, warmup=0, seq_len=None, accuracy=False)).seq_len
        == SEQ
    )


def test_missing_litert_torch_is_one_line_with_the_install_command(tmp_path, tiny_teacher, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(ModelError, match=r"litert-torch, which is not installed; pip install 'litert-torch==0.10.0'"):
        tflite.require_litert_torch()
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['litert_torch'] = None\n")
    csv = write_sentiment_csv(tmp_path / "r.csv", n=200)
    env_path = os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])
    os.environ["PYTHONPATH"], old = env_path, os.environ.get("PYTHONPATH")
    try:
        proc = run_cli(
            "--teacher",
            str(tiny_teacher),
            "--data",
            str(csv),
            "--out",
            str(tmp_path / "o"),
            *TINY_RUN,
            cache=tmp_path / "c",
        )
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert "pip install 'litert-torch==0.10.0'" in proc.stderr and "--set export.tflite=false" in proc.stderr
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_benchmark_model_input_files_hold_the_tensors_litert_reads(converted, tmp_path):
    """No benchmark_model binary runs here: its raw input files (one per input, rows back to back,
    cut on the device with dd) must give the interpreter exactly what the runner feeds it."""
    from edgepipe.devices import benchmark_model

    _, _, splits, _, int8, _ = converted
    t, n = splits["test"], 20
    layout = benchmark_model.input_layout(int8)
    assert {d["signature"] for d in layout} == {"serving_default"}  # benchmark_model is told to run it
    short = benchmark_model.input_layout(int8, BUCKET)
    assert [(d["name"], d["shape"], d["signature"]) for d in short] == [
        (f"seq_{BUCKET}_args_{i}", [1, BUCKET], f"seq_{BUCKET}") for i in range(3)
    ]
    arrays = {"input_ids": t.input_ids, "attention_mask": t.attention_mask, "token_type_ids": t.token_type_ids}
    files = benchmark_model.write_inputs(layout, arrays, n, tmp_path)
    assert [f.stat().st_size for f in files] == [n * d["dtype"].itemsize * d["shape"][1] for d in layout]
    # benchmark_model runs the default signature (subgraph 0), padded to its length
    m = LiteRTModel(int8)
    expected = m.run(t.input_ids[:n], t.attention_mask[:n], t.token_type_ids[:n])
    from ai_edge_litert.interpreter import Interpreter

    raw = Interpreter(str(int8), num_threads=1)  # no signature runner: the bare interpreter benchmark_model is
    raw.allocate_tensors()
    got = []
    for i in range(n):
        for detail, d, f in zip(m.inputs, layout, files):
            width = d["shape"][1]
            row = np.fromfile(f, dtype=d["dtype"], count=width, offset=i * width * d["dtype"].itemsize).reshape(
                1, width
            )
            raw.set_tensor(detail["index"], row)
        raw.invoke()
        got.append(raw.get_tensor(m.output["index"])[0].copy())
    assert np.array_equal(np.stack(got), expected)


def test_task_library_metadata_keeps_a_4_bit_table_loadable(converted, tmp_path):
    """tflite-support's writer rebuilds the flatbuffer with a schema that drops block scales (LiteRT then
    refused the model); the graft keeps the model as it was and adds the metadata and packed files."""
    from edgepipe.export.tflite_metadata import read_metadata, write_metadata

    d, _, splits, _, int8, _ = converted
    vocab, labels = tmp_path / "vocab.txt", tmp_path / "labels.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]) + "\n")
    labels.write_text("neg\npos\n")
    names = [t["name"] for t in LiteRTModel(int8).inputs]
    write_metadata(int8, tmp_path / "m.tflite", vocab, labels, *names)
    md = read_metadata(tmp_path / "m.tflite")
    assert sorted(md["files"]) == ["labels.txt", "vocab.txt"] and md["metadata"]["subgraph_metadata"]
    assert table_scales(tmp_path / "m.tflite") == ({np.int8}, [(30522, 2)])
    assert np.array_equal(
        LiteRTModel(tmp_path / "m.tflite").predict(splits["test"]), LiteRTModel(int8).predict(splits["test"])
    )


def test_a_4_bit_table_that_misses_the_budget_is_written_as_int8_rows(converted, tmp_path):
    _, model, splits, _, _, _ = converted
    seen = []

    def refuse(path):
        seen.append(table_scales(path))
        return False

    report = tflite.export_tflite_int8(model, tmp_path / "m.tflite", splits["train"], SEQ, 16, "int4", refuse)
    assert seen == [({np.int8}, [(30522, 2)])]  # the budget was asked about the 4-bit table
    assert report["embedding_bits"] == 8 and "int8 rows" in report["int4_table"]
    assert table_scales(tmp_path / "m.tflite") == ({np.int8}, [])
