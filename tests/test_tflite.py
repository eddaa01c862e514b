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
# the real litert-torch conversions (fp32, then PT2E int8 + ai-edge-quantizer) take about a minute
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfl")
    model, splits = train_tiny_classifier(d, seed=3, n=500, held_out=100, seq_len=SEQ)
    fp32, int8 = d / "m.fp32.tflite", d / "m.int8.tflite"
    tflite.export_tflite_fp32(model, fp32, splits["test"], SEQ)
    report = tflite.export_tflite_int8(model, int8, splits["train"], SEQ, 64, embedding="int4")
    return d, model, splits, fp32, int8, report


def test_fp32_parity_and_signature(converted):
    _, model, splits, fp32, _, _ = converted
    assert tflite.check_tflite_parity(model, fp32, splits["test"], SEQ, atol=1e-4)["parity_max_abs"] < 1e-4
    m = LiteRTModel(fp32)
    assert [tuple(d["shape"]) for d in m.inputs] == [(1, SEQ)] * 3 and all(d["dtype"] == np.int32 for d in m.inputs)
    assert np.array_equal(m.predict(splits["test"]).argmax(1), predict(model, splits["test"]).argmax(1))


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
    assert fp32.stat().st_size / rows.stat().st_size > 2.8  # only the table shrinks: 7.8 of 8.2 MB, 4x
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
    with pytest.raises(DeviceError, match=f"takes sequences of {SEQ} tokens"):
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
    arrays = {"input_ids": t.input_ids, "attention_mask": t.attention_mask, "token_type_ids": t.token_type_ids}
    files = benchmark_model.write_inputs(layout, arrays, n, tmp_path)
    assert [f.stat().st_size for f in files] == [n * d["dtype"].itemsize * d["shape"][1] for d in layout]
    m = LiteRTModel(int8)
    expected = m.predict(t)[:n]
    got = []
    for i in range(n):
        for detail, d, f in zip(m.inputs, layout, files):
            width = d["shape"][1]
            row = np.fromfile(f, dtype=d["dtype"], count=width, offset=i * width * d["dtype"].itemsize).reshape(
                1, width
            )
            m.interpreter.set_tensor(detail["index"], row)
        m.interpreter.invoke()
        got.append(m.interpreter.get_tensor(m.output["index"])[0].copy())
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
