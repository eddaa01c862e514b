"""`python -m bench` (bench/goals.py): the goals suite.

Fast tier: its pure parts, and `measure()` on a copy of the fixture run with the runtimes stubbed
(files of the manifest's sizes, latencies and accuracies set by hand), so every ratio, median and
throughput figure is checked against a number worked out by hand, not against the code's own formula.
End-to-end (`e2e`): the real command on a copy of a tiny real run; structure and plumbing only,
never a timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fixtures import MANIFEST

from bench import goals
from edgepipe.devices.remote import RUNNER
from edgepipe.errors import EdgepipeError

ROOT = Path(__file__).resolve().parents[1]


def test_goal_status_boundaries_and_not_measured():
    assert goals.goal_status("size_ratio", 20.0) == "met" and goals.goal_status("size_ratio", 19.99) == "not met"
    assert goals.goal_status("latency_ratio", 15.0) == "met" and goals.goal_status("latency_ratio", 14.99) == "not met"
    assert goals.goal_status("accuracy_kept", 0.97) == "met" and goals.goal_status("accuracy_kept", 0.9699) == "not met"
    assert goals.goal_status("wall_s", 480.0) == "met" and goals.goal_status("wall_s", 480.1) == "not met"
    assert goals.goal_status("wall_cached_s", 240.0) == "met" and goals.goal_status("wall_cached_s", 241) == "not met"
    assert goals.goal_status("peer_accuracy_delta", 0.0) == "met"  # equal accuracy is enough
    assert goals.goal_status("peer_accuracy_delta", -0.05) == "not met"
    assert (
        goals.goal_status("percent_of_peak", 40.0) == "met" and goals.goal_status("percent_of_peak", 39.9) == "not met"
    )
    assert (
        goals.goal_status("runner_overhead", 0.03) == "met" and goals.goal_status("runner_overhead", 0.031) == "not met"
    )
    assert goals.goal_status("runner_overhead", -0.01) == "met"  # the runner measured faster than the bare loop
    assert goals.goal_status("accuracy_kept", None) == "not measured"


def test_goal_text():
    assert {k: goals.goal_text(k) for k in goals.GOALS} == {
        "size_ratio": ">= 20x",
        "latency_ratio": ">= 15x",
        "accuracy_kept": ">= 97%",
        "peer_size_ratio": ">= 5x",
        "peer_latency_ratio": ">= 6x",
        "peer_accuracy_delta": ">= 0 points",
        "wall_s": "<= 480 s",
        "wall_cached_s": "<= 240 s",
        "runner_overhead": "<= 3%",
        "percent_of_peak": ">= 40%",
    }


def test_best_isa_prefers_the_widest_int8_path():
    assert goals.best_isa(["avx2", "avx512bw", "avx512_vnni"])["isa"] == "AVX512-VNNI"
    assert goals.best_isa(["avx2"])["isa"] == "AVX2" and goals.best_isa([]) is None
    assert goals.best_isa(["avx2", "avx512_vnni", "amx_tile", "amx_int8"])["isa"] == "AMX-INT8"
    assert goals.best_isa(["avx2", "avx_vnni"])["isa"] == "AVX-VNNI"
    assert goals.best_isa(["amx_tile", "avx2"])["isa"] == "AVX2"  # AMX needs both flags


def test_atomic_write_leaves_no_temp_file(tmp_path):
    goals.write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


# -- measurements, runtimes stubbed --------------------------------------------------------------------


class _Model:
    """Stands in for runner.OnnxRuntimeModel / LiteRTModel: remembers the file and counts its latency rounds."""

    runtime = "?"

    def __init__(self, path: str, threads: int):
        self.name, self.threads, self.round = Path(path).name, threads, 0
        self.info = {"runtime": self.runtime}


class _Ort(_Model):
    runtime = "onnxruntime"


class _Lite(_Model):
    runtime = "litert"

    def __init__(self, path: str, threads: int):
        super().__init__(path, threads)
        if self.name.startswith("pruned"):  # written with export.tflite_buckets [16, 32] at seq_len 64
            self.info["length_signatures"] = {"seq_16": 16, "seq_32": 32, "serving_default": 64}


def _stub_latency(monkeypatch, p50s: dict[str, list[float]]) -> list[tuple]:
    """runner.measure_latency answering each file's p50s in turn (across every model object made of
    that file); returns the calls it saw."""
    calls = []
    taken: dict[str, int] = {}

    def measure_latency(model, arrays, warmup, runs, batch, seq_len):
        calls.append((model.name, arrays["from"], warmup, runs, batch, seq_len))
        i = taken[model.name] = taken.get(model.name, -1) + 1
        return SimpleNamespace(p50=p50s[model.name][i]), 0.0

    monkeypatch.setattr(goals.rn, "measure_latency", measure_latency)
    return calls


def test_paired_latency_alternates_rounds_and_takes_the_median_of_per_round_ratios(monkeypatch):
    calls = _stub_latency(monkeypatch, {"a.onnx": [10.0, 12.0, 9.0, 11.0], "b.onnx": [1.0, 0.5, 0.5, 2.0]})
    out = goals.paired_latency(
        lambda: _Ort("a.onnx", 1), lambda: _Ort("b.onnx", 1), {"from": "A"}, {"from": "B"}, 64, 4, 3, 20
    )
    # ABBA: a b | b a | a b | b a, each on its own inputs
    assert [c[:2] for c in calls] == [
        ("a.onnx", "A"),
        ("b.onnx", "B"),
        ("b.onnx", "B"),
        ("a.onnx", "A"),
        ("a.onnx", "A"),
        ("b.onnx", "B"),
        ("b.onnx", "B"),
        ("a.onnx", "A"),
    ]
    assert {c[2:] for c in calls} == {(3, 20, 1, 64)}  # warmup, runs, batch 1, seq_len
    assert out["ratio_per_round"] == [10.0, 24.0, 18.0, 5.5]
    assert out["ratio"] == 14.0  # median of 5.5, 10, 18, 24
    assert out["a_p50_ms"] == 10.5 and out["b_p50_ms"] == 0.75  # medians of each side
    assert out["info_a"] == {"runtime": "onnxruntime"}


def test_runner_overhead_is_the_median_ratio_of_runner_to_bare_p50(monkeypatch):
    import onnxruntime

    order, runner_p50, bare_p50 = [], iter([0.52, 0.50, 0.55]), iter([0.50, 0.50, 0.50])

    class Session:
        def __init__(self, path, options, providers):
            self.path = path

        def get_inputs(self):
            return [SimpleNamespace(name="input_ids")]

        def run(self, outputs, feed):
            return None

    def run(cmd, **kwargs):
        order.append("runner")
        out = json.dumps({"latency_ms": {"p50": next(runner_p50)}})
        return subprocess.CompletedProcess(cmd, 0, stdout=f"a line of noise\n{out}\n", stderr="")

    def from_samples(cls, samples):
        order.append("bare")
        return SimpleNamespace(p50=next(bare_p50))

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    monkeypatch.setattr(goals.rn, "load_inputs", lambda directory: ({}, None))
    monkeypatch.setattr(goals.rn, "padded_batch", lambda arrays, i, batch, seq_len: {"input_ids": i, "labels": i})
    monkeypatch.setattr(goals.rn, "ort_session_options", lambda threads: None)
    monkeypatch.setattr(goals.rn.LatencyStats, "from_samples", classmethod(from_samples))
    monkeypatch.setattr(goals.subprocess, "run", run)

    ov = goals.runner_overhead(Path("m.onnx"), Path("inputs"), 2, 64, 3, 1, 4)
    assert order == ["runner", "bare", "bare", "runner", "runner", "bare"]  # alternating rounds
    assert ov["ratio_per_round"] == pytest.approx([1.04, 1.0, 1.1])  # 0.52/0.50, 0.50/0.50, 0.55/0.50
    assert ov["ratio"] == pytest.approx(1.04) and ov["overhead"] == pytest.approx(0.04)
    assert ov["runner_p50_ms"] == 0.52 and ov["bare_p50_ms"] == 0.5
    assert ov["runner_cmd"] == [
        sys.executable,
        str(RUNNER),
        "--model",
        "m.onnx",
        "--inputs",
        "inputs",
        "--threads",
        "2",
        "--warmup",
        "1",
        "--runs",
        "4",
        "--batch",
        "1",
        "--seq-len",
        "64",
        "--no-accuracy",
    ]

    monkeypatch.setattr(
        goals.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 2, "", "runner: no such model\n")
    )
    with pytest.raises(RuntimeError, match="^runner failed: runner: no such model$"):
        goals.runner_overhead(Path("m.onnx"), Path("inputs"), 1, 64, 1, 1, 4)


# the fixture's files the goals read, with the bytes the manifest records
FILES = {
    "onnx/teacher.fp32.onnx": 8_000_000,
    "onnx/pruned.int8.onnx": 500_000,
    "tflite/pruned.int8.tflite": 400_000,
    "tflite/teacher.fp32.tflite": 7_500_000,
}


@pytest.fixture
def stub_run(tmp_path):
    """A run dir of its own: the fixture manifest and files of the sizes it records, their sha256
    written into the manifest copy, except the teacher's TFLite, rewritten after the run."""
    run = tmp_path / "run"
    raw = json.loads(MANIFEST.read_text())
    for rel, size in FILES.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        data = bytes([len(rel)]) * size
        (run / rel).write_bytes(data)
        for model in raw["models"].values():
            for art in model["artifacts"].values():
                if art["path"] == rel and rel != "tflite/teacher.fp32.tflite":
                    art["sha256"] = hashlib.sha256(data).hexdigest()
    (run / "manifest.json").write_text(json.dumps(raw))
    return run


def _args(run: Path, **kw) -> argparse.Namespace:
    return argparse.Namespace(
        **(
            {
                "run_dir": run,
                "seed": 0,
                "quick": False,
                "rounds": 3,
                "runs": 7,
                "threads_all": False,
                "wall": False,
                "wall_sizes": [],
                "cache": run.parent / "cache",
            }
            | kw
        )
    )


def test_run_reads_the_artifacts_and_inputs_the_manifest_records(stub_run):
    run = goals.Run(stub_run)
    assert run.seq_len == 64
    art = run.artifact("pruned", "onnx_int8")
    assert art["bytes"] == 500_000 and art["manifest_bytes"] == 500_000 and art["matches_manifest"] is True
    assert run.artifact("teacher", "tflite_fp32")["matches_manifest"] is False  # same size, other bytes
    assert run.artifact("student", "onnx_fp32") == {"path": str(stub_run / "onnx/student.fp32.onnx"), "missing": True}
    assert run.artifact("student", "tflite_int8") is None
    assert run.inputs("pruned") == stub_run / "data/test_pruned" and run.inputs("teacher") == stub_run / "data/test"


def test_run_seq_len_of_runs_from_before_export_seq_len(stub_run):
    raw = json.loads((stub_run / "manifest.json").read_text())
    del raw["config"]["export"]["seq_len"]
    raw["config"]["bench"]["seq_len"] = 32
    (stub_run / "manifest.json").write_text(json.dumps(raw))
    assert goals.Run(stub_run).seq_len == 32


def test_measure_on_a_stubbed_run(stub_run, monkeypatch):
    # accuracy on each model's own inputs (the pruned model reads its pruned-vocabulary ids)
    accuracy = {"teacher.fp32.onnx": 0.90, "pruned.int8.onnx": 0.882, "pruned.int8.tflite": 0.864, "peer.onnx": 0.8825}

    def measure_accuracy(model, arrays, labels, limit=None):
        assert arrays["from"] == ("test" if model.name.startswith(("teacher", "peer")) else "test_pruned")
        assert labels == f"labels of {arrays['from']}" and limit is None  # the full split
        return accuracy[model.name], 200, []

    overhead_calls = []

    def runner_overhead(*args):
        overhead_calls.append(args)
        return {"runner_p50_ms": 0.515, "bare_p50_ms": 0.5, "ratio": 1.03, "overhead": 0.03}

    monkeypatch.setattr(goals.rn, "OnnxRuntimeModel", _Ort)
    monkeypatch.setattr(goals.rn, "LiteRTModel", _Lite)
    # 300 texts of 10, 20 or 30 real tokens in turn
    mask = (np.arange(64)[None, :] < np.array([10, 20, 30] * 100)[:, None]).astype(np.int64)

    def load_inputs(d):
        return {"from": Path(d).name, "attention_mask": mask}, f"labels of {Path(d).name}"

    monkeypatch.setattr(goals.rn, "load_inputs", load_inputs)
    monkeypatch.setattr(goals.rn, "measure_accuracy", measure_accuracy)
    monkeypatch.setattr(goals, "runner_overhead", runner_overhead)
    peer_calls = []

    def usual_int8_route(teacher, digest, out):
        peer_calls.append((teacher, digest, out))
        return {"path": str(stub_run / "peer.onnx"), "bytes": 2_000_000, "sha256": "p"}

    monkeypatch.setattr(goals, "usual_int8_route", usual_int8_route)
    scaling_calls = []

    def scaling(*args):
        scaling_calls.append(args)
        return {"by_seq_len": [{"seq_len": 16, "p50_ms": 0.2}], "by_batch": [], "throughput": []}

    monkeypatch.setattr(goals, "scaling", scaling)
    monkeypatch.setattr(
        goals,
        "cpuinfo",
        lambda: {
            "model": "Stub CPU",
            "logical_cpus": 2,
            "mhz": 2000.0,
            "mhz_source": "stub",
            "int8_flags": ["avx2", "avx512bw", "avx512_vnni"],
        },
    )
    latency_calls = _stub_latency(
        monkeypatch,
        {
            # ORT rounds: at 64 tokens vs the teacher, vs the peer; at real lengths vs the teacher, vs the peer
            "teacher.fp32.onnx": [10.0, 12.0, 9.0] + [5.0, 5.0, 5.0],
            "pruned.int8.onnx": [1.0, 0.5, 0.5] + [0.5, 0.5, 1.0] + [0.4, 0.5, 0.5] + [0.25, 0.25, 0.25],
            "peer.onnx": [3.0, 2.5, 3.5] + [1.5, 1.5, 1.5],
            # LiteRT rounds: at real lengths (each text through its length signature), then at 64 tokens
            "teacher.fp32.tflite": [4.0, 4.0, 4.0] + [8.0, 8.0, 8.0],
            "pruned.int8.tflite": [0.25, 0.25, 0.5] + [1.0, 0.5, 2.0],
        },
    )

    doc = goals.measure(_args(stub_run))
    r = doc["results"]
    assert doc["manifest_sha256"] == hashlib.sha256((stub_run / "manifest.json").read_bytes()).hexdigest()
    assert (doc["mode"], doc["seq_len"], doc["rounds"], doc["runs_per_round"], doc["warmup"]) == ("full", 64, 3, 7, 10)
    assert doc["threads"] == [1] and doc["eval_limit"] is None
    assert doc["warnings"] == ["teacher_tflite_fp32: file on disk differs from the manifest (run dir rewritten?)"]

    # 1. size: 8,000,000 / 500,000 = 16x (not met), 8,000,000 / 400,000 = 20x (met, on the line)
    assert {k: v for k, v in r["size"].items() if k != "peer"} == {
        "teacher_onnx_fp32_bytes": 8_000_000,
        "goal": ">= 20x",
        "rows": [
            {"vs": "pruned_onnx_int8", "bytes": 500_000, "ratio": 16.0, "status": "not met"},
            {"vs": "pruned_tflite_int8", "bytes": 400_000, "ratio": 20.0, "status": "met"},
        ],
    }
    # 3. accuracy kept: 0.882 / 0.90 = 98% (met), 0.864 / 0.90 = 96% (not met)
    acc = r["accuracy"]
    assert acc["teacher_onnx_fp32"] == {"accuracy": 0.9, "n_eval": 200} and acc["goal"] == ">= 97%"
    assert [(a["model"], a["accuracy"], a["n_eval"], a["status"]) for a in acc["rows"]] == [
        ("pruned_onnx_int8", 0.882, 200, "met"),
        ("pruned_tflite_int8", 0.864, 200, "not met"),
    ]
    assert [a["kept"] for a in acc["rows"]] == pytest.approx([0.98, 0.96])

    (e,) = r["per_threads"]
    # 2. latency, ONNX Runtime: rounds 10/1, 12/0.5, 9/0.5 = 10, 24, 18 -> median 18x (met)
    ort = e["latency_onnxruntime"]
    assert ort["ratio_per_round"] == [10.0, 24.0, 18.0] and ort["ratio"] == 18.0 and ort["status"] == "met"
    assert (ort["a"], ort["b"], ort["a_p50_ms"], ort["b_p50_ms"]) == (
        "teacher_onnx_fp32",
        "pruned_onnx_int8",
        10.0,
        0.5,
    )
    # LiteRT: 8/1, 8/0.5, 8/2 = 8, 16, 4 -> median 8x (not met)
    lite = e["latency_litert"]
    assert lite["ratio_per_round"] == [8.0, 16.0, 4.0] and lite["ratio"] == 8.0 and lite["status"] == "not met"
    assert lite["info_a"] == {"runtime": "litert"} and lite["b_p50_ms"] == 1.0
    assert lite["info_b"]["length_signatures"] == {"seq_16": 16, "seq_32": 32, "serving_default": 64}
    # 5. runner overhead: the pruned int8 ONNX on its own inputs, 100 runs; 3% is on the line (met)
    assert overhead_calls == [(stub_run / "onnx/pruned.int8.onnx", stub_run / "data/test_pruned", 1, 64, 3, 10, 100)]
    assert e["runner_overhead"]["status"] == "met"
    # 6. throughput: 2 x 1,280,000 MACs / 0.5 ms = 5.12 GOPS; AVX512-VNNI 1 thread x 2000 MHz x 256 = 512 GOPS
    tp = e["throughput"]
    assert (tp["macs"], tp["ops_per_inference"], tp["p50_ms"], tp["macs_seq_len_matches"]) == (
        1_280_000,
        2_560_000,
        0.5,
        True,
    )
    assert tp["achieved_int8_gops"] == pytest.approx(5.12) and tp["isa_selected"] == "AVX512-VNNI"
    assert tp["peak_int8_gops"] == pytest.approx(512.0) and tp["percent_of_peak"] == pytest.approx(1.0)
    assert [(p["isa"], p["peak_int8_gops"], p["percent_of_peak"]) for p in tp["peaks_by_isa"]] == [
        ("AVX512-VNNI", pytest.approx(512.0), pytest.approx(1.0)),
        ("AVX512BW", pytest.approx(256.0), pytest.approx(2.0)),
        ("AVX2", pytest.approx(128.0), pytest.approx(4.0)),
    ]
    assert r["wall"] == {"goal": "cold <= 480 s, cached teacher <= 240 s", "status": "not measured (pass --wall)"}
    # the peer: built from the teacher's file, into the cache dir under the teacher's hash (the run dir is read only)
    ((teacher, digest, out),) = peer_calls
    assert teacher == stub_run / "onnx/teacher.fp32.onnx" and out.parent == stub_run.parent / "cache"
    assert digest == doc["artifacts"]["teacher_onnx_fp32"]["sha256"]
    assert out.name == f"usual_int8_route.{digest[:16]}.onnx"
    # 2,000,000 / 500,000 = 4x (not met); 0.882 - 0.8825 = -0.05 points (not met: equal or better)
    assert r["size"]["peer"] | {"ratio": 4.0} == r["size"]["peer"] and r["size"]["peer"]["status"] == "not met"
    assert r["accuracy"]["peer"]["pruned_onnx_int8_minus_peer_points"] == pytest.approx(-0.05)
    assert r["accuracy"]["peer"]["status"] == "not met"
    # peer latency: 3/0.5, 2.5/0.5, 3.5/1 = 6, 5, 3.5 -> median 5x (not met)
    vp = e["latency_vs_peer"]
    assert vp["ratio_per_round"] == [6.0, 5.0, 3.5] and vp["ratio"] == 5.0 and vp["status"] == "not met"
    # real lengths: 5/0.4, 5/0.5, 5/0.5 -> 10x; 1.5/0.25 -> 6x; fed at each text's own length, >= 200 texts
    rl = e["latency_real_lengths"]
    assert rl["teacher_onnx_fp32"]["ratio"] == 10.0 and rl["peer"]["ratio"] == 6.0
    real_calls = [c for c in latency_calls if c[5] == goals.rn.REAL_LENGTHS]
    assert len(real_calls) == 18 and {c[3] for c in real_calls} == {200}
    # LiteRT at real lengths: 4/0.25, 4/0.25, 4/0.5 -> 16x, through the pruned model's length signatures
    assert rl["litert"]["ratio_per_round"] == [16.0, 16.0, 8.0] and rl["litert"]["ratio"] == 16.0
    assert rl["litert"]["length_signatures"] == [16, 32, 64]
    assert rl["lengths"] == {"n": 200, "median": 20.0, "max": 30}
    ((model, arrays, threads, runs),) = scaling_calls
    assert (
        model == stub_run / "onnx/pruned.int8.onnx" and arrays["from"] == "test_pruned" and (threads, runs) == ([1], 40)
    )
    assert r["scaling"]["by_seq_len"] == [{"seq_len": 16, "p50_ms": 0.2}]
    assert "LiteRT teacher fp32 4.00 ms / pruned int8 0.250 ms (median 20 tokens)" in [
        row[1] for row in goals.table_rows(doc)
    ]
    assert tp["status"] == "not met"  # 1 % of the estimated peak, goal 40 %
    assert {row["status"] for row in doc["goal_status"]} <= {"met", "not met", "not measured (pass --wall)"}


def test_measure_without_a_teacher_onnx_names_it(stub_run):
    (stub_run / "onnx/teacher.fp32.onnx").unlink()
    with pytest.raises(EdgepipeError, match="has no teacher_onnx_fp32 artifact; it is needed for every goal"):
        goals.measure(_args(stub_run))


# -- the table --------------------------------------------------------------------------------------


def _doc(wall: dict) -> dict:
    """A results document by hand: 1 and 2 threads, no pruned TFLite, no ISA estimate at 2 threads."""
    return {
        "results": {
            "size": {
                "teacher_onnx_fp32_bytes": 8_000_000,
                "goal": ">= 20x",
                "rows": [
                    {"vs": "pruned_onnx_int8", "bytes": 400_000, "ratio": 20.0, "status": "met"},
                    {"vs": "pruned_tflite_int8", "bytes": None, "ratio": None, "status": "not measured (missing)"},
                ],
                "peer": {"peer_bytes": 2_000_000, "ratio": 5.0, "goal": ">= 5x", "status": "met"},
            },
            "accuracy": {
                "teacher_onnx_fp32": {"accuracy": 0.9, "n_eval": 200},
                "goal": ">= 97%",
                "rows": [
                    {"model": "pruned_onnx_int8", "accuracy": 0.882, "n_eval": 200, "kept": 0.98, "status": "met"},
                    {"model": "pruned_tflite_int8", "accuracy": None, "kept": None, "status": "not measured (missing)"},
                ],
                "peer": {
                    "accuracy": 0.88,
                    "n_eval": 200,
                    "pruned_onnx_int8_minus_peer_points": 0.2,
                    "goal": ">= 0 points",
                    "status": "met",
                },
            },
            "per_threads": [
                {
                    "threads": 1,
                    "latency_onnxruntime": {"a_p50_ms": 10.0, "b_p50_ms": 0.5, "ratio": 20.0, "status": "met"},
                    "latency_litert": {"ratio": None, "status": "not measured (missing)"},
                    "latency_vs_peer": {"a_p50_ms": 3.0, "b_p50_ms": 0.5, "ratio": 6.0, "status": "met"},
                    "latency_real_lengths": {
                        "teacher_onnx_fp32": {"a_p50_ms": 4.0, "b_p50_ms": 0.25, "ratio": 16.0},
                        "peer": {"a_p50_ms": 1.5, "b_p50_ms": 0.25, "ratio": 6.0},
                        "lengths": {"n": 200, "median": 25.0, "max": 64},
                    },
                    "runner_overhead": {"runner_p50_ms": 0.515, "bare_p50_ms": 0.5, "overhead": 0.03, "status": "met"},
                    "throughput": {
                        "achieved_int8_gops": 5.12,
                        "isa_selected": "AVX512-VNNI",
                        "peak_int8_gops": 512.0,
                        "percent_of_peak": 1.0,
                        "status": "not met",
                        "peaks_by_isa": [
                            {"isa": "AVX512-VNNI", "peak_int8_gops": 512.0, "percent_of_peak": 1.0},
                            {"isa": "AVX512BW", "peak_int8_gops": 256.0, "percent_of_peak": 2.0},
                            {"isa": "AVX2", "peak_int8_gops": 128.0, "percent_of_peak": 4.0},
                        ],
                    },
                },
                {
                    "threads": 2,
                    "latency_onnxruntime": {"a_p50_ms": 6.0, "b_p50_ms": 0.4, "ratio": 15.0, "status": "met"},
                    "latency_litert": {"a_p50_ms": 5.0, "b_p50_ms": 0.5, "ratio": 10.0, "status": "not met"},
                    "latency_vs_peer": {"a_p50_ms": 2.0, "b_p50_ms": 0.4, "ratio": 5.0, "status": "not met"},
                    "latency_real_lengths": {
                        "teacher_onnx_fp32": {"a_p50_ms": 3.0, "b_p50_ms": 0.2, "ratio": 15.0},
                        "peer": {"a_p50_ms": 1.0, "b_p50_ms": 0.2, "ratio": 5.0},
                        "lengths": {"n": 200, "median": 25.0, "max": 64},
                    },
                    "runner_overhead": {
                        "runner_p50_ms": 0.42,
                        "bare_p50_ms": 0.4,
                        "overhead": 0.05,
                        "status": "not met",
                    },
                    "throughput": {"achieved_int8_gops": 6.4, "percent_of_peak": None},
                },
            ],
            "wall": wall,
        }
    }


def test_table_rows_of_a_hand_made_results_document():
    wall_goal = "cold <= 480 s, cached teacher <= 240 s"
    rows = goals.table_rows(_doc({"goal": wall_goal, "status": goals.NOT_MEASURED_WALL}))
    real = "2 latency, real lengths"
    assert rows == [
        ("1 size", "teacher fp32 ONNX / pruned_onnx_int8 (bytes)", "-", "20.00x", ">= 20x", "met"),
        ("1 size", "teacher fp32 ONNX / pruned_tflite_int8 (bytes)", "-", "—", ">= 20x", "not measured (missing)"),
        ("1 size vs peer", "usual int8 route 2.0 MB / pruned int8 ONNX (bytes)", "-", "5.00x", ">= 5x", "met"),
        ("2 latency", "ORT teacher fp32 10.00 ms / pruned int8 0.500 ms", "1", "20.00x", ">= 15x", "met"),
        ("2 latency", "LiteRT teacher fp32 / pruned int8", "1", "—", ">= 15x", "not measured (missing)"),
        ("2 latency vs peer", "ORT usual int8 route 3.00 ms / pruned int8 0.500 ms", "1", "6.00x", ">= 6x", "met"),
        (
            real,
            "ORT teacher fp32 4.00 ms / pruned int8 0.250 ms (median 25 tokens)",
            "1",
            "16.00x",
            "no goal",
            "reported",
        ),
        (
            real,
            "ORT usual int8 route 1.50 ms / pruned int8 0.250 ms (median 25 tokens)",
            "1",
            "6.00x",
            "no goal",
            "reported",
        ),
        ("2 latency", "ORT teacher fp32 6.00 ms / pruned int8 0.400 ms", "2", "15.00x", ">= 15x", "met"),
        ("2 latency", "LiteRT teacher fp32 5.00 ms / pruned int8 0.500 ms", "2", "10.00x", ">= 15x", "not met"),
        ("2 latency vs peer", "ORT usual int8 route 2.00 ms / pruned int8 0.400 ms", "2", "5.00x", ">= 6x", "not met"),
        (
            real,
            "ORT teacher fp32 3.00 ms / pruned int8 0.200 ms (median 25 tokens)",
            "2",
            "15.00x",
            "no goal",
            "reported",
        ),
        (
            real,
            "ORT usual int8 route 1.00 ms / pruned int8 0.200 ms (median 25 tokens)",
            "2",
            "5.00x",
            "no goal",
            "reported",
        ),
        ("3 accuracy kept", "pruned_onnx_int8 0.8820 / teacher fp32 0.9000 (n=200)", "-", "98.00%", ">= 97%", "met"),
        ("3 accuracy kept", "pruned_tflite_int8 acc / teacher fp32 acc", "-", "—", ">= 97%", "not measured (missing)"),
        (
            "3 accuracy vs peer",
            "pruned int8 ONNX - usual int8 route 0.8800 (n=200), points",
            "-",
            "+0.20",
            ">= 0 points",
            "met",
        ),
        ("4 wall", "compress-and-export cold / cached teacher", "all", "—", wall_goal, "not measured (pass --wall)"),
        ("5 runner overhead", "runner.py p50 0.515 ms vs bare session.run 0.500 ms", "1", "+3.0%", "<= 3%", "met"),
        ("5 runner overhead", "runner.py p50 0.420 ms vs bare session.run 0.400 ms", "2", "+5.0%", "<= 3%", "not met"),
        (
            "6 int8 throughput",
            "5.1 GOPS vs est. AVX512-VNNI peak 512 GOPS (2.0% of AVX512BW, 4.0% of AVX2)",
            "1",
            "1.0%",
            ">= 40% at batch 1 (peak is an estimate)",
            "not met",
        ),
        ("6 int8 throughput", "6.4 GOPS achieved", "2", "—", "no goal", "peak not estimated"),
    ]


def test_table_rows_of_a_measured_wall():
    run = {"peak_rss_mb_largest_process": 2048.4, "peak_rss_mb_tree_sum_sampled": 2500.0}
    wall = {
        "goal": "cold <= 480 s, cached teacher <= 240 s",
        "cold": run | {"wall_s": 612.0, "goal": "<= 480 s", "status": "not met"},
        "cached_teacher": run | {"wall_s": 230.4, "goal": "<= 240 s", "status": "met"},
    }
    rows = [row for row in goals.table_rows(_doc(wall)) if row[0] == "4 wall"]
    assert rows == [
        (
            "4 wall",
            "compress-and-export cold: peak RSS 2048 MB largest process, 2500 MB tree",
            "all",
            "612 s",
            "<= 480 s",
            "not met",
        ),
        (
            "4 wall",
            "compress-and-export cached_teacher: peak RSS 2048 MB largest process, 2500 MB tree",
            "all",
            "230 s",
            "<= 240 s",
            "met",
        ),
    ]


# -- end to end --------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_bench_quick_on_a_tiny_run(tiny_full_run, tmp_path):
    """The real command on a copy of the shared tiny run (nothing written into the shared one):
    what it reports is what is on disk; the arithmetic is checked above, on numbers set by hand."""
    run = tmp_path / "run"
    shutil.copytree(tiny_full_run[0], run)
    # as a default run: no teacher TFLite (the bench builds it from the run's teacher cache)
    raw = json.loads((run / "manifest.json").read_text())
    teacher_tflite = raw["models"]["teacher"]["artifacts"].pop("tflite_fp32")
    raw["models"]["teacher"]["artifacts"].pop("tflite_int8")
    (run / "manifest.json").write_text(json.dumps(raw))
    manifest_bytes = (run / "manifest.json").read_bytes()
    out = tmp_path / "out" / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            str(run),
            "--quick",
            "--threads-all",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "c"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not measured (pass --wall)" in proc.stdout and "MLAS would select" in proc.stdout
    assert sorted(os.listdir(out.parent)) == ["results.json", "scaling.svg"]  # atomic: no temp file left
    built = sorted(p.name for p in (tmp_path / "c").iterdir())  # the peer and the teacher's TFLite, cached
    assert [n.split(".")[0] for n in built] == ["teacher_tflite_fp32", "usual_int8_route"]
    assert (run / "manifest.json").read_bytes() == manifest_bytes  # the run dir is only read
    doc = json.loads(out.read_text())
    manifest = json.loads(manifest_bytes)

    assert doc["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert doc["mode"].startswith("quick") and doc["seq_len"] == manifest["config"]["export"]["seq_len"]
    assert doc["rounds"] == 1 and doc["warnings"] == []
    assert doc["threads"] == ([1, os.cpu_count()] if os.cpu_count() > 1 else [1])
    assert {"model", "logical_cpus", "int8_flags", "load_before", "load_after"} <= doc["machine"].keys()
    assert {"python", "onnxruntime", "numpy"} <= doc["versions"].keys() and doc["isa_assumptions"]
    for name, art in doc["artifacts"].items():
        if name not in (goals.PEER, "teacher_tflite_fp32"):  # built by the bench, not recorded in the run's manifest
            assert art["matches_manifest"] and Path(art["path"]).stat().st_size == art["bytes"]
    r = doc["results"]

    teacher = manifest["models"]["teacher"]["artifacts"]["onnx_fp32"]
    assert r["size"]["teacher_onnx_fp32_bytes"] == teacher["bytes"] == (run / teacher["path"]).stat().st_size
    assert [row["vs"] for row in r["size"]["rows"]] == ["pruned_onnx_int8", "pruned_tflite_int8"]
    for row in r["size"]["rows"]:
        assert row["bytes"] == doc["artifacts"][row["vs"]]["bytes"] and row["ratio"] > 1
        assert row["status"] in ("met", "not met")

    assert r["accuracy"]["teacher_onnx_fp32"]["n_eval"] == min(200, manifest["dataset"]["splits"]["test"]["n"])
    assert [row["model"] for row in r["accuracy"]["rows"]] == ["pruned_onnx_int8", "pruned_tflite_int8"]
    for row in r["accuracy"]["rows"]:
        assert 0 <= row["accuracy"] <= 1 and row["kept"] > 0 and row["status"] in ("met", "not met")
    assert r["wall"]["status"] == "not measured (pass --wall)" and "cold" not in r["wall"]

    for e in r["per_threads"]:
        for key in ("latency_onnxruntime", "latency_litert"):
            lat = e[key]
            assert len(lat["ratio_per_round"]) == len(lat["a_p50_ms_per_round"]) == 1  # --quick: one round
            assert lat["a_p50_ms"] > 0 and lat["b_p50_ms"] > 0 and lat["status"] in ("met", "not met")
        assert e["latency_litert"]["info_a"]["runtime"] == "litert"
        assert e["latency_onnxruntime"]["info_b"]["runtime"] == "onnxruntime"
        ov = e["runner_overhead"]
        assert "--no-accuracy" in ov["runner_cmd"] and ov["runner_cmd"][1].endswith("runner.py")
        assert ov["runner_p50_ms"] > 0 and ov["bare_p50_ms"] > 0
        tp = e["throughput"]
        assert tp["macs"] == manifest["models"]["pruned"]["macs"]
        assert tp["p50_ms"] == e["latency_onnxruntime"]["b_p50_ms"] and tp["achieved_int8_gops"] > 0
        if tp["percent_of_peak"] is not None:
            assert tp["isa_selected"] in [row["isa"] for row in doc["isa_assumptions"]]
            assert "inferred" in tp["isa_selected_note"]
    # the usual int8 route: built from the teacher's file, and our int8 file is smaller than it
    peer = doc["artifacts"]["usual_int8_route"]
    assert Path(peer["path"]).stat().st_size == peer["bytes"] and r["size"]["peer"]["ratio"] > 1
    assert 0 <= r["accuracy"]["peer"]["accuracy"] <= 1 and r["accuracy"]["peer"]["status"] in ("met", "not met")
    for e in r["per_threads"]:
        assert e["latency_vs_peer"]["a"] == "usual_int8_route" and e["latency_vs_peer"]["b_p50_ms"] > 0
        rl = e["latency_real_lengths"]
        assert 1 <= rl["lengths"]["median"] <= rl["lengths"]["max"] <= doc["seq_len"]
        assert rl["teacher_onnx_fp32"]["a_p50_ms"] > 0 and rl["peer"]["b_p50_ms"] > 0
        # LiteRT at real lengths: the pruned model's length signatures, and the teacher built with the same
        assert rl["litert"]["length_signatures"] == [16, 32, doc["seq_len"]] and rl["litert"]["ratio"] > 0
    lite_teacher = doc["artifacts"]["teacher_tflite_fp32"]
    assert lite_teacher["max_abs_vs_teacher_onnx"] < 1e-3 and "length signatures [16, 32]" in lite_teacher["recipe"]
    # the same model as the run's own teacher TFLite, which the bench did not see
    assert abs(lite_teacher["bytes"] - teacher_tflite["bytes"]) < 0.01 * teacher_tflite["bytes"]
    sc = r["scaling"]
    assert [x["seq_len"] for x in sc["by_seq_len"]] == goals.SCALING_SEQ
    assert [x["batch"] for x in sc["by_batch"]] == goals.SCALING_BATCH
    assert [x["threads"] for x in sc["throughput"]] == doc["threads"]
    assert all(x["p50_ms"] > 0 for x in sc["by_seq_len"] + sc["by_batch"])
    assert (out.parent / "scaling.svg").read_text().lstrip().startswith("<?xml")
    assert {row["goal"] for row in doc["goal_status"]} >= {"1 size", "1 size vs peer", "2 latency vs peer"}


def test_wall_by_size_runs_one_cold_run_per_size_and_reads_its_metric(monkeypatch):
    """--wall-sizes: one cold run per training-set size with data.train_limit, its wall time, memory and
    the shipped int8's test metric read from that run's manifest; a failed run says so in the table."""
    from fixtures import manifest_dict

    from bench import goals

    calls = []

    def fake_wall_run(out_dir, cache, extra):
        calls.append(extra)
        n = int(extra[-1].split("=")[1])
        if n == 3000:
            return {"rc": 7, "wall_s": 3.0, "peak_rss_mb_largest_process": 10.0}
        out_dir.mkdir(parents=True)
        (out_dir / "manifest.json").write_text(json.dumps(manifest_dict()))
        return {"rc": 0, "wall_s": 12.5, "peak_rss_mb_largest_process": 900.0}

    monkeypatch.setattr(goals, "wall_run", fake_wall_run)
    out = goals.wall_by_size([1000, 3000], [])
    assert calls == [["--set", "data.train_limit=1000"], ["--set", "data.train_limit=3000"]]
    assert out["rows"] == [
        {"train_examples": 1000, "wall_s": 12.5, "max_rss_mb": 900.0, "metric": 0.855, "rc": 0},
        {"train_examples": 3000, "wall_s": 3.0, "max_rss_mb": 10.0, "metric": None, "rc": 7},
    ]
    assert [r[3] for r in goals.wall_size_rows(out)] == ["12 s, metric 0.8550", "failed (rc 7)"]
