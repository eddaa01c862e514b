"""`python -m bench`: the goals suite on a tiny real run. Checks structure and that every ratio is computed
from the numbers it reports; never asserts a timing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import goals

ROOT = Path(__file__).resolve().parents[1]


def test_goal_status_boundaries_and_not_measured():
    assert goals.goal_status("size_ratio", 20.0) == "met" and goals.goal_status("size_ratio", 19.99) == "not met"
    assert goals.goal_status("wall_s", 600.0) == "met" and goals.goal_status("wall_s", 600.1) == "not met"
    assert (
        goals.goal_status("runner_overhead", 0.031) == "not met"
        and goals.goal_status("accuracy_kept", None) == "not measured"
    )


def test_best_isa_prefers_the_widest_int8_path():
    assert goals.best_isa(["avx2", "avx512bw", "avx512_vnni"])["isa"] == "AVX512-VNNI"
    assert goals.best_isa(["avx2"])["isa"] == "AVX2" and goals.best_isa([]) is None
    assert goals.best_isa(["avx2", "avx512_vnni", "amx_tile", "amx_int8"])["isa"] == "AMX-INT8"


def test_atomic_write_leaves_no_temp_file(tmp_path):
    goals.write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


@pytest.fixture(scope="module")
def tiny_run(tiny_full_run):
    return tiny_full_run[0]


@pytest.mark.e2e
def test_bench_quick_on_a_tiny_run(tiny_run, tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", str(tiny_run), "--quick", "--threads-all", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not measured (pass --wall)" in proc.stdout and "MLAS would select" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # atomic: no temp file left
    doc = json.loads(out.read_text())
    manifest = json.loads((tiny_run / "manifest.json").read_text())

    assert doc["manifest_sha256"] == hashlib.sha256((tiny_run / "manifest.json").read_bytes()).hexdigest()
    assert (
        doc["mode"].startswith("quick")
        and doc["seq_len"] == manifest["config"]["bench"]["seq_len"]
        and doc["rounds"] == 1
    )
    assert doc["threads"] == ([1, os.cpu_count()] if os.cpu_count() > 1 else [1])
    assert {"model", "logical_cpus", "int8_flags", "load_before", "load_after"} <= doc["machine"].keys()
    assert {"python", "onnxruntime", "numpy"} <= doc["versions"].keys() and doc["isa_assumptions"]
    for art in doc["artifacts"].values():
        assert art["matches_manifest"] and Path(art["path"]).stat().st_size == art["bytes"]
    r = doc["results"]

    # 1. size: exactly the ratio of the file sizes
    t_bytes = (tiny_run / manifest["models"]["teacher"]["artifacts"]["onnx_fp32"]["path"]).stat().st_size
    assert r["size"]["teacher_onnx_fp32_bytes"] == t_bytes and len(r["size"]["rows"]) == 2
    for row in r["size"]["rows"]:
        assert row["ratio"] == t_bytes / Path(doc["artifacts"][row["vs"]]["path"]).stat().st_size
        assert row["status"] == ("met" if row["ratio"] >= 20 else "not met")

    # 3. accuracy kept: exactly the ratio of the two accuracies it reports, on 200 (or all) examples
    teacher_acc = r["accuracy"]["teacher_onnx_fp32"]["accuracy"]
    assert r["accuracy"]["teacher_onnx_fp32"]["n_eval"] == min(200, manifest["dataset"]["splits"]["test"]["n"])
    assert [row["model"] for row in r["accuracy"]["rows"]] == ["pruned_onnx_int8", "pruned_tflite_int8"]
    for row in r["accuracy"]["rows"]:
        assert 0 <= row["accuracy"] <= 1 and row["kept"] == row["accuracy"] / teacher_acc
        assert row["status"] == ("met" if row["kept"] >= 0.97 else "not met")

    assert r["wall"]["status"] == "not measured (pass --wall)" and "cold" not in r["wall"]

    for e in r["per_threads"]:
        # 2. latency on both runtimes: per-round ratio a/b, median over rounds
        for key in ("latency_onnxruntime", "latency_litert"):
            lat = e[key]
            assert lat["ratio_per_round"] == [
                a / b for a, b in zip(lat["a_p50_ms_per_round"], lat["b_p50_ms_per_round"])
            ]
            assert (
                lat["ratio"] == float(np.median(lat["ratio_per_round"])) and lat["a_p50_ms"] > 0 and lat["b_p50_ms"] > 0
            )
            assert lat["status"] == ("met" if lat["ratio"] >= 15 else "not met")
        assert (
            e["latency_litert"]["info_a"]["runtime"] == "litert"
            and e["latency_onnxruntime"]["info_b"]["runtime"] == "onnxruntime"
        )
        # 5. runner overhead
        ov = e["runner_overhead"]
        assert ov["ratio_per_round"] == [
            a / b for a, b in zip(ov["runner_p50_ms_per_round"], ov["bare_p50_ms_per_round"])
        ]
        assert ov["overhead"] == ov["ratio"] - 1 and ov["ratio"] == float(np.median(ov["ratio_per_round"]))
        assert "--no-accuracy" in ov["runner_cmd"] and ov["runner_cmd"][1].endswith("runner.py")
        # 6. throughput: 2 x MACs / p50 of the pruned int8 ONNX, against threads x MHz x ops/cycle
        tp = e["throughput"]
        assert (
            tp["macs"] == manifest["models"]["pruned"]["macs"] and tp["p50_ms"] == e["latency_onnxruntime"]["b_p50_ms"]
        )
        assert tp["achieved_int8_gops"] == pytest.approx(2 * tp["macs"] / (tp["p50_ms"] / 1e3) / 1e9, rel=1e-12)
        if tp["percent_of_peak"] is not None:
            row = next(x for x in doc["isa_assumptions"] if x["isa"] == tp["isa_selected"])
            peak = e["threads"] * doc["machine"]["mhz"] * 1e6 * row["int8_ops_per_cycle_per_core"]
            assert tp["peak_int8_gops"] == pytest.approx(peak / 1e9) and tp["percent_of_peak"] == pytest.approx(
                100 * tp["achieved_int8_gops"] * 1e9 / peak
            )
            assert "inferred" in tp["isa_selected_note"]
