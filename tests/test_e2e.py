"""End-to-end runs of the real CLI: the built-in task (--smoke), a user's CSV and teacher, bad input."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import (
    BIN,
    SMOKE_ARGS,
    TINY_RUN,
    app_check_answers,
    make_tiny_bert,
    run_cli,
    run_cli_in_process,
    tiny_full_args,
    write_sentiment_csv,
)

pytestmark = pytest.mark.e2e

CONTRACT_BENCH_KEYS = {
    "device",
    "runtime",
    "model",
    "artifact",
    "threads",
    "seq_len",
    "batch",
    "latency_ms",
    "accuracy",
}


def without_timings(manifest: dict) -> dict:
    m = json.loads(json.dumps(manifest))
    m.pop("timings")
    m.pop("device_sessions", None)  # busy and wall seconds per device
    for model in m["models"].values():
        model.pop("cache_hit", None)
        for part in model.values():
            if isinstance(part, dict):
                part.pop("seconds", None)
                part.pop("validation_seconds", None)
    for b in m["benchmarks"]:
        for key in ("latency_ms", "latency_samples_ms", "init_ms", "first_inference_ms", "peak_rss_mb"):
            b.pop(key)
        for key in ("warmup_ms", "memory", "conditions", "thermal", "energy"):  # measured, like the latencies
            b.pop(key, None)
    return m


def test_smoke_run_writes_the_manifest_contract(smoke_run):
    out, _, proc = smoke_run
    m = json.loads((out / "manifest.json").read_text())
    assert {"version", "config", "dataset", "models", "benchmarks"} <= m.keys()
    assert {"name", "sha256", "splits"} <= m["dataset"].keys()
    assert m["dataset"]["splits"]["test"]["n"] == 400 and m["dataset"]["splits"]["train"]["n"] == 960
    for role in ("teacher", "student", "pruned"):
        model = m["models"][role]
        assert isinstance(model["params"], int) and 0 <= model["accuracy"] <= 1
        art = model["artifacts"]["onnx_fp32"]
        f = out / art["path"]
        assert f.stat().st_size == art["bytes"] and art["parity_max_abs"] < 1e-4
        import hashlib

        assert hashlib.sha256(f.read_bytes()).hexdigest() == art["sha256"]
    t, s = m["models"]["teacher"], m["models"]["student"]
    assert t["layers"] == 6 and s["layers"] == 1 and s["params"] < t["params"]
    # trained for real: better than the majority class (57.5% fresh) on held-out data
    assert t["accuracy"] > 0.65 and s["accuracy"] > 0.6
    p = m["models"]["pruned"]
    assert p["params"] < s["params"] and p["vocab_size"] < s["vocab_size"] == t["vocab_size"] == 30522
    assert s["non_embedding_macs"] >= 2 * p["non_embedding_macs"] and p["macs_seq_len"] == 64
    assert (
        p["heads_per_layer"] == p["heads_kept"]
        and sum(p["heads_kept"]) == 6
        and 0 <= p["accuracy_before_recovery"] <= 1
    )
    assert p["recovery"]["steps"] == 30 and p["vocab"]["kept"] == p["vocab_size"]
    assert (out / "pruned" / "vocab.txt").read_text().count("\n") == p["vocab_size"]
    assert p["artifacts"]["onnx_fp32"]["bytes"] < s["artifacts"]["onnx_fp32"]["bytes"] / 3
    for role in ("student", "pruned"):
        q = m["models"][role]["artifacts"]["onnx_int8"]
        assert (out / q["path"]).is_file() and q["calibration_method"] == "minmax" and q["calibration_examples"] == 64
        assert q["quantized_matmuls"] > 0 and q["excluded_node_count"] >= 0 and 0.9 <= q["argmax_agreement"] <= 1
        assert q["budget_met"] and abs(q["test_accuracy"] - q["fp32_test_accuracy"]) < 0.03
        assert q["fp32_test_accuracy"] == pytest.approx(m["models"][role]["accuracy"], abs=1 / 400 + 1e-9)
    assert p["artifacts"]["onnx_fp32"]["bytes"] / p["artifacts"]["onnx_int8"]["bytes"] >= 3.5
    tf, tq = p["artifacts"]["tflite_fp32"], p["artifacts"]["tflite_int8"]
    assert tf["parity_max_abs"] < 1e-4 and tf["bytes"] / tq["bytes"] >= 3.5 and tq["int8_embedding"]
    assert abs(tq["test_accuracy"] - tq["fp32_test_accuracy"]) < 0.03 and tq["argmax_agreement"] >= 0.95
    assert tq["fp32_test_accuracy"] == pytest.approx(p["accuracy"], abs=1 / 400 + 1e-9)
    ef, eq, e4 = (p["artifacts"][f"executorch_{v}"] for v in ("fp32", "int8", "8da4w"))
    assert ef["parity_max_abs"] < 1e-4 and ef["delegate"] == "XNNPACK" and ef["max_seq_len"] == 64
    assert ef["bytes"] / eq["bytes"] >= 3.5 and eq["embedding_bits"] in (4, 8) and eq["tries"]
    # 200 validation rows: one point is two texts, so the budget is recorded, not assumed met
    within = eq["val_drop_points"] <= eq["budget_points"] and eq["val_agreement"] >= eq["budget_min_agreement"]
    assert eq["budget_met"] == within
    assert abs(eq["test_accuracy"] - eq["fp32_test_accuracy"]) < 0.03 and eq["argmax_agreement"] >= 0.95
    assert eq["fp32_test_accuracy"] == pytest.approx(p["accuracy"], abs=1 / 400 + 1e-9)
    assert e4["bytes"] < eq["bytes"] and e4["int4_linears"] > 0 and e4["argmax_agreement"] >= 0.9
    assert e4["budget_met"] == (
        e4["val_drop_points"] <= e4["budget_points"] and e4["val_agreement"] >= e4["budget_min_agreement"]
    )
    assert len(m["benchmarks"]) == 11
    runtimes = {"tflite": "litert", "executorch": "executorch"}
    for b in m["benchmarks"]:
        runtime = runtimes.get(b["artifact"].split("_")[0], "onnxruntime")  # .onnx and .ort
        assert b.keys() >= CONTRACT_BENCH_KEYS and b["device"] == "x86" and b["runtime"] == runtime
        assert {"p50", "p90", "p99", "mean", "std", "n"} <= b["latency_ms"].keys() and b["latency_ms"]["n"] == 20
        # the runtime's accuracy on the device equals PyTorch's (same inputs, parity ~1e-6)
        art = m["models"][b["model"]]["artifacts"][b["artifact"]]
        expected = art.get("test_accuracy", m["models"][b["model"]]["accuracy"])
        assert b["accuracy"] == pytest.approx(expected, abs=1 / 400 + 1e-9)
    assert "teacher" in proc.stdout and "pruned" in proc.stdout and "p50 ms" in proc.stdout
    # regression: TensorFlow/oneDNN start-up lines leaked into the console during the TFLite export
    noise = ("oneDNN", "INFO: Created TensorFlow Lite", "[START]", "[ DONE]", "_pytree.py")
    leaked = [
        ln
        for ln in (proc.stderr + proc.stdout).splitlines()
        if any(n in ln for n in noise) or re.match(r"[IWE]\d{4} ", ln)
    ]
    assert not leaked, leaked


@pytest.mark.parametrize("target", ["tflite", "ort", "executorch"])
def test_app_bundle_is_self_sufficient(smoke_run, tmp_path, target):
    """Only the bundle folder, no transformers/edgepipe (no torch but ExecuTorch's): text in, the label
    edgepipe's evaluation gives out."""

    import numpy as np

    from edgepipe.config import build_config, load_yaml
    from edgepipe.pipeline.data import load_dataset
    from edgepipe.tokenized import TokenizedSplit

    out, _, _ = smoke_run
    m = json.loads((out / "manifest.json").read_text())
    bundle = tmp_path / "bundle"
    shutil.copytree(out / m["bundles"][target]["path"], bundle)
    card = json.loads((bundle / "model_card.json").read_text())
    assert card["labels"] == m["dataset"]["labels"] == (bundle / "labels.txt").read_text().split()
    assert card["tokenizer"]["vocab_size"] == m["models"]["pruned"]["vocab_size"] and card["max_sequence_length"] == 64
    assert [i["role"] for i in card["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    if target in ("ort", "executorch"):
        shipped = {"ort": "ort", "executorch": "executorch_int8"}[target]
        assert card["model"]["sha256"] == m["models"]["pruned"]["artifacts"][shipped]["sha256"]
    assert "Kotlin" in (bundle / "README.md").read_text() and "Swift" in (bundle / "README.md").read_text()

    cfg = build_config(load_yaml(out / "config.yaml"))
    texts = load_dataset(cfg.data)[0].texts["test"][:150]
    answers = app_check_answers(bundle, texts, tmp_path / "texts.txt")
    app = [a["index"] for a in answers]

    arrays = {
        k: np.load(out / "data" / "test_pruned" / f"{k}.npy")[:150]
        for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
    }
    split = TokenizedSplit(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], arrays["labels"])
    if target == "tflite":
        from edgepipe.runtimes.litert import LiteRTModel

        # what app_check.py runs: the length signatures' file, each text through the shortest that holds it
        ref = LiteRTModel(bundle / card["length_signatures"]["file"]).predict(split).argmax(1)
        fp32 = LiteRTModel(out / m["models"]["pruned"]["artifacts"]["tflite_fp32"]["path"]).predict(split)
    elif target == "executorch":
        from edgepipe.runtimes.executorch import ExecuTorchModel

        assert card["model"]["runtime"] == "executorch" and card["inputs"][0]["shape"] == ["batch<=64", "sequence<=64"]
        assert "Module.load" in (bundle / "README.md").read_text()
        ref = ExecuTorchModel(bundle / card["model"]["file"]).predict(split).argmax(1)
        fp32 = ExecuTorchModel(out / m["models"]["pruned"]["artifacts"]["executorch_fp32"]["path"]).predict(split)
    else:
        from edgepipe.runtimes.onnxruntime import OrtModel

        ref = OrtModel(bundle / card["model"]["file"]).predict(split).argmax(1)
        fp32 = OrtModel(out / m["models"]["pruned"]["artifacts"]["onnx_fp32"]["path"]).predict(split)
    assert app == ref.tolist()
    # regression: the int8 TFLite used to output int8 logits, which the app check softmaxed raw (every score 1.0)
    assert [o["dtype"] for o in card["outputs"]] == ["float32"]
    scores = np.array([a["score"] for a in answers])
    p = np.exp(fp32 - fp32.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    agree = np.array(app) == fp32.argmax(1)
    assert agree.mean() >= 0.95 and np.abs(scores[agree] - p.max(1)[agree]).max() < 0.1 and scores.min() < 0.99
    if target == "tflite":
        from edgepipe.export.tflite_metadata import read_metadata

        md = read_metadata(bundle / card["model"]["file"])
        assert (
            sorted(md["files"]) == ["labels.txt", "vocab.txt"]
            and card["model"]["task_library_metadata"] == "BertNLClassifier"
        )
        graph = md["metadata"]["subgraph_metadata"][0]
        assert [t["name"] for t in graph["input_tensor_metadata"]] == ["ids", "mask", "segment_ids"]
        units = graph["input_process_units"][0]
        assert (
            units["options_type"] == "BertTokenizerOptions" and units["options"]["vocab_file"][0]["name"] == "vocab.txt"
        )
        assert (
            card["model"]["app_api"] == "MediaPipe TextClassifier"
            and "TextClassifier" in (bundle / "README.md").read_text()
        )
        # what the README tells app developers to use: MediaPipe's TextClassifier, tokenizing for itself from the
        # metadata, gives the bundle's reference logits (texts without accents: MediaPipe keeps them, WordPiece strips)
        # MediaPipe runs the default signature: app_check.py's through it, then through its length signatures
        ascii_texts = [t for t in texts if t.isascii()][:100]
        got = mediapipe_logits(bundle, card, ascii_texts)
        ref = app_check_logits(bundle, ascii_texts, length_signatures=False)
        assert np.array_equal(got.argmax(1), ref.argmax(1)) and np.abs(got - ref).max() < 1e-4
        lengths = card["length_signatures"]
        assert lengths["signatures"] == {"seq_16": 16, "seq_32": 32} and lengths["file"] != card["model"]["file"]
        assert "seq_16" in (bundle / "README.md").read_text()
        bucketed = app_check_logits(bundle, ascii_texts)
        assert (bucketed.argmax(1) == ref.argmax(1)).mean() >= 0.95 and not np.array_equal(bucketed, ref)
        # the metadata is extra bytes only: same outputs as the run's int8 artifact's default signature; the
        # length signatures' file is the artifact itself
        artifact = out / m["models"]["pruned"]["artifacts"]["tflite_int8"]["path"]
        padded = (split.input_ids, split.attention_mask, split.token_type_ids)
        assert np.array_equal(
            LiteRTModel(artifact).run(*padded), LiteRTModel(bundle / card["model"]["file"]).run(*padded)
        )
        assert (bundle / lengths["file"]).read_bytes() == artifact.read_bytes()


def mediapipe_logits(bundle: Path, card: dict, texts: list[str]):
    """MediaPipe Tasks' TextClassifier on the bundle's TFLite model, raw logits in label order."""
    import numpy as np
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.text import text_classifier as mpt

    options = mpt.TextClassifierOptions(base_options=BaseOptions(model_asset_path=str(bundle / card["model"]["file"])))
    with mpt.TextClassifier.create_from_options(options) as classifier:
        rows = [{c.category_name: c.score for c in classifier.classify(t).classifications[0].categories} for t in texts]
    return np.array([[row[label] for label in card["labels"]] for row in rows])


def app_check_logits(bundle: Path, texts: list[str], length_signatures: bool = True):
    """The bundle's own reference (app_check.py: WordPiece + the runtime), logits per text; without
    `length_signatures`, every text padded to the default signature's length."""
    import runpy

    import numpy as np

    check = runpy.run_path(str(bundle / "app_check.py"))
    card, wordpiece, model = check["load_bundle"](str(bundle))
    if not length_signatures:  # the file MediaPipe loads: the default signature only
        model = check["Model"](str(bundle / card["model"]["file"]))
        assert model.buckets == []
    return np.array([model.logits(wordpiece.encode(t, card["max_sequence_length"])) for t in texts], dtype=np.float64)


def test_ort_format_model_matches_its_onnx(smoke_run):
    out, _, _ = smoke_run
    o = json.loads((out / "manifest.json").read_text())["models"]["pruned"]["artifacts"]["ort"]
    assert o["path"].endswith(".ort") and o["argmax_agreement_vs_onnx"] == 1.0 and o["max_abs_vs_onnx"] < 1e-3
    assert (out / o["path"]).with_suffix(".required_operators.config").is_file()


def test_quant_variants_bench_runs_on_a_run_dir(smoke_run, tmp_path):
    import subprocess
    import sys

    out, _, _ = smoke_run
    res = tmp_path / "variants.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.quant_variants", str(out), "--quick", "--out", str(res)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(res.read_text())["rows"]
    assert len(rows) == 2 and all(
        r["size_ratio"] > 3 and r["latency_ratio"] > 0 and 0 <= r["agreement"] <= 1 for r in rows
    )
    assert "latency vs fp32" in proc.stdout


def test_formats_bench_measures_the_four_shipped_formats_side_by_side(smoke_run, tmp_path):
    import subprocess
    import sys

    out, _, _ = smoke_run
    res = tmp_path / "formats.json"
    args = ["--rounds", "2", "--runs", "3", "--threads", "1", "--out", str(res)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.formats", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(res.read_text())
    m = json.loads((out / "manifest.json").read_text())
    assert list(r["formats"]) == ["onnx_int8", "tflite_int8", "executorch_int8", "executorch_8da4w"]
    for name, row in r["formats"].items():
        art = m["models"]["pruned"]["artifacts"][name]
        # the runner's metric on the test split equals what the stage that wrote the artifact measured
        assert row["bytes"] == art["bytes"] and row["device_metric"] == pytest.approx(art["test_accuracy"], abs=1e-9)
        t1 = row["threads_1"]
        assert t1["rounds"] == 2 and 0 < t1["p50_ms"] <= t1["p90_ms"] and t1["peak_rss_mb"] > 0
    assert r["formats"]["executorch_int8"]["runtime"] == "executorch" and r["not_in_run"] == []
    assert "| executorch_8da4w |" in proc.stdout


def copy_run(run: Path, tmp_path: Path) -> Path:
    """A shared run dir, copied: tests that rerun or damage a run work on their own."""
    out = tmp_path / "run"
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("run.lock"))
    return out


def test_rerun_reuses_every_stage_and_gives_the_same_manifest(smoke_run, tmp_path):
    out, cache, _ = smoke_run
    out = copy_run(out, tmp_path)
    first = json.loads((out / "manifest.json").read_text())
    proc = run_cli(*SMOKE_ARGS, "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads((out / "manifest.json").read_text())
    assert all(t["reused"] for t in second["timings"].values()), second["timings"]
    assert second["models"]["teacher"]["cache_hit"] is True
    assert without_timings(first) == without_timings(second)


def test_results_added_by_edgepipe_bench_survive_a_rerun(smoke_run, tmp_path):
    """Regression: the rerun wrote its fresh manifest before reading back the earlier rows, losing them."""
    import subprocess

    out, cache, _ = smoke_run
    out = copy_run(out, tmp_path)
    cmd = [
        str(BIN / "edgepipe"),
        "bench",
        str(out),
        "--device",
        "x86",
        "--bench-threads",
        "2",
        "--artifacts",
        "onnx_int8",
    ]
    proc = subprocess.run([*cmd, "--runs", "3", "--warmup", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]

    def two_thread_rows() -> list[tuple[str, str]]:
        m = json.loads((out / "manifest.json").read_text())
        return sorted((b["model"], b["artifact"]) for b in m["benchmarks"] if b["threads"] == 2)

    assert two_thread_rows() == [("pruned", "onnx_int8"), ("student", "onnx_int8")]
    proc = run_cli(*SMOKE_ARGS, "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert two_thread_rows() == [("pruned", "onnx_int8"), ("student", "onnx_int8")]


def test_corrupted_artifact_is_rebuilt_and_only_what_depends_on_it_reruns(smoke_run, tmp_path):
    out, cache, _ = smoke_run
    out = copy_run(out, tmp_path)
    onnx = out / "onnx" / "student.fp32.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(data[: len(data) // 2])
    proc = run_cli(*SMOKE_ARGS, "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    rerun = {k for k, t in m["timings"].items() if not t["reused"]}
    # the export is deterministic: the rebuilt file has the old sha256, so its benchmark stays valid
    assert rerun == {"export_student_onnx_fp32"}
    assert onnx.read_bytes() == data


def test_changed_config_reruns_what_depends_on_it(tiny_full_run, tiny_teacher, tmp_path):
    """On the shared tiny run (int8 and TFLite of the pruned model, TFLite of the teacher too): a new
    distillation temperature reruns the student and everything downstream of it, nothing else."""
    run, csv, cache, _ = tiny_full_run
    copy = copy_run(run, tmp_path)
    proc = run_cli(*tiny_full_args(tiny_teacher, csv, copy, cache), "--set", "distill.temperature=4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((copy / "manifest.json").read_text())
    rerun = {k for k, t in m["timings"].items() if not t["reused"]}
    assert rerun == {
        "distill",
        "eval_student",
        "export_student_onnx_fp32",
        "bench_x86_student_onnx_fp32_t1_b1_s64",
        "importance",
        "prune",
        "eval_pruned",
        "export_pruned_onnx_fp32",
        "bench_x86_pruned_onnx_fp32_t1_b1_s64",
        "quantize_pruned_onnx_int8",
        "bench_x86_pruned_onnx_int8_t1_b1_s64",
        "export_pruned_tflite_fp32",
        "export_pruned_tflite_int8",
        "bench_x86_pruned_tflite_fp32_t1_b1_s64",
        "bench_x86_pruned_tflite_int8_t1_b1_s64",
        "export_pruned_ort",
        "bench_x86_pruned_ort_t1_b1_s64",
        "bundle_tflite",
        "bundle_ort",
    }
    assert m["models"]["student"]["loss"]["temperature"] == 4.0


def test_user_csv_and_local_teacher(tiny_full_run):
    """The shared tiny run is a user's CSV (600 rows) and a local teacher directory."""
    out, stdout = tiny_full_run.run, tiny_full_run.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert m["dataset"]["labels"] == ["neg", "pos"] and m["dataset"]["name"] == "reviews.csv"
    assert m["models"]["teacher"]["fine_tuned"] is True
    # the sentiment word decides the label: both models must have learnt it
    assert m["models"]["teacher"]["accuracy"] >= 0.9 and m["models"]["student"]["accuracy"] >= 0.9
    assert json.loads((out / "student" / "edgepipe.json").read_text())["labels"] == ["neg", "pos"]
    # 400 training examples: small-data settings, augmented texts scored by the teacher, a baseline to beat
    assert m["dataset"]["size_defaults"]["chosen"]["distill.augment"] == 8
    transfer = m["dataset"]["transfer"]
    assert transfer["labelled"] == 400 and transfer["transfer"] == 400 + transfer["augmented"]["used"] > 400
    assert m["config"]["distill"]["augment"] == 8  # the config recorded is the one trained with
    base = m["baseline"]
    assert base["name"] == "majority" and 0.4 <= base["metric"] <= 0.6 and base["teacher"]["beats"]
    assert m["models"]["pruned"]["baseline_margin_kept"] > 0.8
    for role, report in (("teacher", "train"), ("student", "train"), ("pruned", "recovery")):
        r = m["models"][role][report]
        assert r["curve"] and max(v for _, v in r["curve"]) == r["best_val"]
    assert m["models"]["pruned"]["recovery"]["planned_steps"] == 300  # the floor: 400 examples are 25 batches
    assert "no model" in stdout and "baseline" in stdout  # the summary's first row and caption
    report = (out / "report.md").read_text()
    assert "report_files/training.svg" in report and "Share of the teacher's margin kept" in report


def test_a_teacher_no_better_than_the_baseline_stops_the_run_before_distilling(tmp_path):
    csv = write_sentiment_csv(tmp_path / "reviews.csv")
    teacher = make_tiny_bert(tmp_path / "t", head_labels=["neg", "pos"])  # a random head, used as is
    out = tmp_path / "run"
    args = [
        "--teacher",
        str(teacher),
        "--data",
        str(csv),
        "--out",
        str(out),
        *TINY_RUN,
        "--set",
        "teacher.finetune=never",
    ]
    proc = run_cli(*args, cache=tmp_path / "cache")
    _one_line_error(proc, "not clearly better than no model")
    assert proc.returncode == 9 and "--allow-weak-teacher" in proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert not m["baseline"]["teacher"]["beats"] and set(m["models"]) == {"teacher"}  # kept, and nothing distilled


def _one_line_error(proc, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]


def test_missing_teacher_dir(tmp_path):
    proc = run_cli_in_process("--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), cache=tmp_path / "c")
    _one_line_error(proc, "does not exist; pass a local Hugging Face model dir to --teacher")
    assert proc.returncode == 4


def test_csv_without_text_and_label_columns(tmp_path, tiny_teacher):
    f = tmp_path / "d.csv"
    f.write_text("review,stars\ngreat,5\nbad,1\n")
    proc = run_cli_in_process(
        "--teacher", str(tiny_teacher), "--data", str(f), "--out", str(tmp_path / "o"), cache=tmp_path / "c"
    )
    _one_line_error(proc, "has no column 'text', 'label' (columns: review, stars)")
    assert proc.returncode == 3


def test_labels_that_do_not_match_the_teacher_head(tmp_path):
    teacher = make_tiny_bert(tmp_path / "clf", head_labels=["negative", "positive"])
    csv = write_sentiment_csv(tmp_path / "d.csv", labels=("neg", "pos"))
    proc = run_cli_in_process(
        "--teacher", str(teacher), "--data", str(csv), "--out", str(tmp_path / "o"), cache=tmp_path / "c"
    )
    _one_line_error(proc, "teacher head has labels ['negative', 'positive'] but the data has ['neg', 'pos']")
    three = tmp_path / "three.csv"
    three.write_text("text,label\n" + "".join(f"row {i},{i % 3}\n" for i in range(60)))
    proc = run_cli_in_process(
        "--teacher", str(teacher), "--data", str(three), "--out", str(tmp_path / "o2"), cache=tmp_path / "c"
    )
    _one_line_error(proc, "but the data has ['0', '1', '2']")


def test_unwritable_out_and_out_that_is_a_file(tmp_path):
    proc = run_cli_in_process("--out", "/sys/edgepipe-run", cache=tmp_path / "c")
    _one_line_error(proc, "is not writable")
    f = tmp_path / "file"
    f.write_text("x")
    proc = run_cli_in_process("--out", str(f), cache=tmp_path / "c")
    _one_line_error(proc, "is a file, not a directory")


def test_bad_config_value_and_debug_flag(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("distill:\n  alpha: 2\n")
    proc = run_cli("--config", str(cfg), "--out", str(tmp_path / "o"), cache=tmp_path / "c")
    _one_line_error(proc, "distill.alpha: Input should be less than or equal to 1")
    assert proc.returncode == 2
    proc = run_cli("--config", str(cfg), "--out", str(tmp_path / "o"), "--debug", cache=tmp_path / "c")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
