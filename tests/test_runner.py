"""The standalone device-side runner against a real ONNX model and real runtime."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgepipe.config import DataConfig
from edgepipe.devices import x86
from edgepipe.devices.remote import RUNNER
from edgepipe.devices.standalone.runner import LatencyStats
from edgepipe.export.onnx import export_onnx
from edgepipe.export.parity import check_parity
from edgepipe.measurement import Measurement
from edgepipe.model.load import load_teacher_dir, load_tokenizer
from edgepipe.pipeline.data import load_dataset
from edgepipe.runtimes.onnxruntime import OrtModel


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_teacher):
    d = tmp_path_factory.mktemp("onnx")
    model = load_teacher_dir(tiny_teacher)[0].with_labels(["fresh", "rotten"], seed=0).eval()
    ds, _ = load_dataset(DataConfig(train_limit=10, test_size=120, val_size=10))
    splits = ds.tokenize(load_tokenizer(tiny_teacher), 64)
    path = d / "tiny.onnx"
    export_onnx(model, path, splits["test"])
    parity = check_parity(model, path, splits["test"], atol=1e-4)
    splits["test"].save(d / "eval")
    return model, path, d / "eval", splits["test"], parity


def test_latency_stats_percentiles():
    s = LatencyStats.from_samples([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (s.p50, s.p90, s.p99, s.min, s.max, s.n) == pytest.approx((50.5, 90.1, 99.01, 1.0, 100.0, 100))
    assert s.mean == pytest.approx(50.5) and s.std == pytest.approx(np.std(np.arange(1, 101)))


def test_export_parity_and_dynamic_shapes(exported):
    model, path, _, split, parity = exported
    assert parity["parity_max_abs"] < 1e-4 and parity["argmax_agreement"] == 1.0
    ort = OrtModel(path)
    # dynamic batch and sequence: batch 3 of length 17 runs
    out = ort.run(split.input_ids[:3, :17], split.attention_mask[:3, :17], split.token_type_ids[:3, :17])
    assert out.shape == (3, 2)


def test_runner_reports_stats_and_the_same_accuracy_as_the_host(exported):
    _, path, eval_dir, split, _ = exported
    proc = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--model",
            str(path),
            "--inputs",
            str(eval_dir),
            "--runs",
            "15",
            "--warmup",
            "2",
            "--seq-len",
            "32",
            "--predictions",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(proc.stdout)
    host = OrtModel(path).predict(split)
    assert r["accuracy"] == pytest.approx(float((host.argmax(1) == split.labels).mean()))
    assert r["predictions"] == host.argmax(1).tolist()
    assert r["n_eval"] == len(split) and r["latency_ms"]["n"] == 15 and r["seq_len"] == 32
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["runtime"] == "onnxruntime" and r["machine"] == "x86_64" and r["peak_rss_mb"] > 0
    # memory: which figure is which, from this process's /proc files (Linux)
    mem = r["memory"]
    assert mem["peak_rss_mb"] == r["peak_rss_mb"] >= mem["rss_end_mb"] >= mem["pss_end_mb"] >= mem["uss_end_mb"] > 0
    assert mem["load_increase_mb"] == pytest.approx(mem["rss_after_load_mb"] - mem["rss_before_load_mb"])
    assert mem["load_increase_mb"] > 0  # onnxruntime's import and the session
    assert len(r["warmup_ms"]) == 2 and all(x > 0 for x in r["warmup_ms"])  # the warm-up curve, run by run


def test_runner_needs_only_numpy_and_the_runtime(exported):
    import ast

    tree = ast.parse(RUNNER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    third_party = (
        imported - set(sys.stdlib_module_names) - {"__future__", "sensors"}
    )  # sensors.py: beside it, stdlib only
    assert third_party == {"numpy", "onnxruntime", "ai_edge_litert", "executorch", "torch"}  # the last two for .pte
    # and it really runs (an .onnx) with torch and edgepipe made unimportable
    _, path, eval_dir, _, _ = exported
    code = (
        "import sys, runpy; sys.modules['torch'] = None; sys.modules['edgepipe'] = None; "
        f"sys.argv = ['runner', '--model', {str(path)!r}, '--inputs', {str(eval_dir)!r}, '--runs', '2', '--max-eval', '5']; "
        f"runpy.run_path({str(RUNNER)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert json.loads(proc.stdout)["n_eval"] == 5


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("missing.onnx", None, "does not exist"),
        ("bad.onnx", b"not a model", "cannot be loaded by onnxruntime"),
        ("m.bin", b"x", "unknown format"),
    ],
)
def test_runner_bad_model_is_one_line(tmp_path, exported, name, content, needle):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--model", str(tmp_path / name), "--inputs", str(exported[2])],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_x86_device_runs_the_runner_pinned(exported):
    _, path, eval_dir, _, _ = exported
    r = x86.benchmark(path, eval_dir, Measurement(runs=5, warmup=1, pin_cores="0"))
    assert r.device == "x86" and r.device_info["pinned_cores"] == "0" and r.latency_ms.n == 5


def test_peak_rss_is_the_runners_own_not_its_parents():
    """A runner started by a big process (compress-and-export holds ~2 GB) reports its own peak memory:
    Linux keeps the parent's high-water mark in ru_maxrss across fork + exec, VmHWM starts afresh."""
    ballast = np.ones(400 * 1024 * 1024 // 8)  # 400 MB resident in this process
    code = f"import runpy; print(runpy.run_path({str(RUNNER)!r})['peak_rss_mb']())"
    own = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 5 < own < 200 and ballast.sum() > 0


def test_memory_without_smaps_is_not_available_never_made_up(monkeypatch):
    """An OS without /proc/self/smaps_rollup (macOS, old kernels): the runner says so, and keeps only the
    peak it can read."""
    import builtins

    runner = runpy_runner()
    real_open = builtins.open

    def no_smaps(path, *args, **kwargs):
        if str(path).endswith("smaps_rollup"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_smaps)
    assert runner["memory_now"]() is None
    report = runner["memory_report"](None, None, None)
    assert report["smaps"] == "not available on this OS" and "pss_end_mb" not in report and report["peak_rss_mb"] > 0


def runpy_runner() -> dict:
    import runpy

    return runpy.run_path(str(RUNNER))


def test_the_runner_without_sensors_py_beside_it_says_so_in_one_line(tmp_path):
    import shutil

    shutil.copy(RUNNER, tmp_path / "runner.py")
    proc = subprocess.run([sys.executable, "runner.py", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "runner: sensors.py is not beside runner.py; copy both from edgepipe's devices/standalone/"
    )
