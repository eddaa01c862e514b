"""edgepipe's goals, measured side by side on this machine from one finished run directory.

    python -m bench [RUN_DIR] [--threads-all] [--wall] [--quick] [--out bench/results.json]

1. size: teacher fp32 ONNX bytes / pruned int8 ONNX bytes, and / pruned int8 TFLite bytes (>= 20x);
   and the usual int8 route (below) / pruned int8 ONNX (>= 5x)
2. latency: teacher fp32 / pruned int8 p50 at batch 1 and the run's export.seq_len, on ONNX
   Runtime and on LiteRT (teacher TFLite fp32 vs pruned TFLite int8), paired alternating
   rounds in this process, median of the per-round ratios (>= 15x); the usual int8 route /
   pruned int8 (>= 6x); and the same ratios at the test split's real lengths (batch 1: what an app
   sending one text at a time costs; ORT takes each text at its own length, LiteRT runs it through
   the shortest length signature that holds it, export.tflite_buckets). A run that converted only the
   shipped model gets its teacher TFLite built here, from the run's teacher cache
3. accuracy kept: pruned int8 test accuracy / teacher fp32 test accuracy, full test split (>= 97%),
   and pruned int8 vs the usual int8 route (equal or better)
4. `compress-and-export` wall time and peak memory, cold cache (<= 480 s) and cached teacher
   (<= 240 s), only with --wall (~20 min)
5. the device runner's own overhead: runner.py's p50 (subprocess, JSON) against a bare
   `session.run` loop in this process, same session options, alternating rounds (<= 3 %)
6. achieved int8 throughput of the pruned int8 ONNX as a % of an estimated peak (>= 40 % at batch 1)
7. scaling (no goal): the pruned int8 ONNX's p50 against sequence length (16-256) and batch
   (1-32), and throughput at batch 32 — tables in results.json, a plot in bench/scaling.svg

"The usual int8 route" is the peer a user would reach for first: the teacher's ONNX through ONNX
Runtime's dynamic int8 quantizer, per-channel, default operator set (what Optimum's `ORTQuantizer`
with `AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)` runs), built here.

Latency figures run at 1 thread, and also at os.cpu_count() threads with --threads-all.
Nothing is taken from the manifest's own benchmarks: every figure is measured here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.app.report import GOALS_FILE, load_run, scaling_svg, write_report
from edgepipe.config import default_cache_dir
from edgepipe.devices.remote import RUNNER
from edgepipe.devices.standalone import runner as rn
from edgepipe.errors import EdgepipeError
from edgepipe.manifest import Manifest
from edgepipe.rundir import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic

GOALS = {
    "size_ratio": {"op": ">=", "value": 20.0, "unit": "x"},
    "latency_ratio": {"op": ">=", "value": 15.0, "unit": "x"},
    "accuracy_kept": {"op": ">=", "value": 0.97, "unit": "fraction"},
    "peer_size_ratio": {"op": ">=", "value": 5.0, "unit": "x"},
    "peer_latency_ratio": {"op": ">=", "value": 6.0, "unit": "x"},
    "peer_accuracy_delta": {"op": ">=", "value": 0.0, "unit": "points"},
    "wall_s": {"op": "<=", "value": 480.0, "unit": "s"},
    "wall_cached_s": {"op": "<=", "value": 240.0, "unit": "s"},
    "runner_overhead": {"op": "<=", "value": 0.03, "unit": "fraction"},
    "percent_of_peak": {"op": ">=", "value": 40.0, "unit": "%"},
}
PEER = "usual_int8_route"
SCALING_SEQ = [16, 32, 64, 128, 256]
SCALING_BATCH = [1, 2, 4, 8, 16, 32]
NOT_MEASURED_WALL = "not measured (pass --wall)"

# int8 ops (1 MAC = 2 ops) per cycle per core, best ISA first. Estimates, not measurements.
ISA_TABLE = [
    {
        "isa": "AMX-INT8",
        "flags": ["amx_int8", "amx_tile"],
        "int8_ops_per_cycle_per_core": 2048,
        "assumption": "TDPBUSD on one TMUL unit: 1024 int8 MACs/cycle/core (Intel's Sapphire Rapids figure, "
        "2048 int8 ops/cycle/core); MLAS has a U8S8 AMX QGEMM kernel (qgemm_kernel_amx.cpp, Linux) "
        "that falls back to AVX512-VNNI for small GEMMs",
    },
    {
        "isa": "AVX512-VNNI",
        "flags": ["avx512_vnni"],
        "int8_ops_per_cycle_per_core": 256,
        "assumption": "VPDPBUSD zmm = 64 int8 MACs = 128 ops per instruction, 2 x 512-bit FMA ports on server cores",
    },
    {
        "isa": "AVX-VNNI",
        "flags": ["avx_vnni"],
        "int8_ops_per_cycle_per_core": 128,
        "assumption": "VPDPBUSD ymm = 32 int8 MACs = 64 ops per instruction, 2 ports",
    },
    {
        "isa": "AVX512BW",
        "flags": ["avx512bw"],
        "int8_ops_per_cycle_per_core": 128,
        "assumption": "vpmaddubsw+vpmaddwd+vpaddd on zmm: 64 MACs per 3 instructions, ~2 ports -> ~128 ops/cycle",
    },
    {
        "isa": "AVX2",
        "flags": ["avx2"],
        "int8_ops_per_cycle_per_core": 64,
        "assumption": "vpmaddubsw+vpmaddwd+vpaddd on ymm: 32 MACs per 3 instructions, ~2 ports -> ~64 ops/cycle",
    },
]


# --------------------------------------------------------------------------- helpers


def goal_status(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    g = GOALS[key]
    ok = value >= g["value"] if g["op"] == ">=" else value <= g["value"]
    return "met" if ok else "not met"


def goal_text(key: str) -> str:
    g = GOALS[key]
    if g["unit"] == "fraction":
        return f"{g['op']} {g['value']:.0%}"
    return f"{g['op']} {g['value']:g}{'' if g['unit'] in ('x', '%') else ' '}{g['unit']}"


def cpuinfo() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    first: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            first[k.strip()] = v.strip()
    flags = set(first.get("flags", "").split())
    mhz, mhz_source = None, None
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        mhz, mhz_source = int(max_freq.read_text().strip()) / 1000.0, str(max_freq)
    elif "cpu MHz" in first:
        mhz, mhz_source = (
            float(first["cpu MHz"]),
            "/proc/cpuinfo 'cpu MHz' (current/nominal clock; no cpufreq in this VM)",
        )
    return {
        "model": rn.cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpu_cores_per_socket": int(first["cpu cores"]) if first.get("cpu cores", "").isdigit() else None,
        "siblings": int(first["siblings"]) if first.get("siblings", "").isdigit() else None,
        "mhz": mhz,
        "mhz_source": mhz_source,
        "int8_flags": sorted(
            f for f in flags if f in {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"}
        ),
    }


def best_isa(flags: list[str]) -> dict[str, Any] | None:
    for row in ISA_TABLE:
        if all(f in flags for f in row["flags"]):
            return row
    return None


def machine_snapshot() -> dict[str, Any]:
    return {"loadavg": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod, attr in (("onnxruntime", "__version__"), ("ai_edge_litert", "__version__"), ("edgepipe", "__version__")):
        try:
            out[mod] = getattr(__import__(mod), attr, "unknown")
        except ImportError:
            out[mod] = "not installed"
    return out


# --------------------------------------------------------------------------- run directory


class Run:
    """A finished run dir, read through the manifest's one loader (its errors are one line)."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.manifest = Manifest.load(run_dir)
        self.manifest_sha256 = hashlib.sha256((run_dir / "manifest.json").read_bytes()).hexdigest()
        export, bench = self.manifest.config.get("export", {}), self.manifest.config.get("bench", {})
        self.seq_len = int(
            export.get("seq_len", bench.get("seq_len", 64))
        )  # bench.seq_len in runs from before export.seq_len
        self.models = self.manifest.models

    def artifact(self, role: str, kind: str) -> dict[str, Any] | None:
        """Path, bytes on disk now, and whether they agree with the manifest (a rewritten run dir shows up here)."""
        art = self.manifest.artifact(role, kind)
        if not art:
            return None
        path = self.dir / art.path
        if not path.is_file():
            return {"path": str(path), "missing": True}
        size = path.stat().st_size
        digest = sha256_file(path)
        return {
            "path": str(path),
            "bytes": size,
            "sha256": digest,
            "manifest_bytes": art.bytes,
            "matches_manifest": size == art.bytes and digest == art.sha256,
        }

    def inputs(self, role: str) -> Path:
        """The role's pre-tokenized test split, as the manifest records it (its own vocabulary for a pruned vocab)."""
        model = self.models.get(role)
        if model and model.eval_inputs:
            return self.dir / model.eval_inputs.path
        return self.dir / "data" / ("test_pruned" if role == "pruned" else "test")


# --------------------------------------------------------------------------- measurements


def paired_latency(
    make_a, make_b, arrays_a, arrays_b, seq_len: int, rounds: int, warmup: int, runs: int
) -> dict[str, Any]:
    """a and b measured in alternating rounds (ABBA order) in this process; ratio per round = a_p50 / b_p50."""
    ma, mb = make_a(), make_b()
    pa, pb = [], []
    for r in range(rounds):
        order = [("a", ma, arrays_a), ("b", mb, arrays_b)]
        if r % 2:
            order.reverse()
        for tag, m, arr in order:
            p50 = rn.measure_latency(m, arr, warmup, runs, 1, seq_len)[0].p50
            (pa if tag == "a" else pb).append(p50)
    ratios = [a / b for a, b in zip(pa, pb)]
    return {
        "a_p50_ms_per_round": pa,
        "b_p50_ms_per_round": pb,
        "ratio_per_round": ratios,
        "a_p50_ms": float(np.median(pa)),
        "b_p50_ms": float(np.median(pb)),
        "ratio": float(np.median(ratios)),
        "info_a": getattr(ma, "info", {}),
        "info_b": getattr(mb, "info", {}),
    }


def runner_overhead(
    model: Path, inputs: Path, threads: int, seq_len: int, rounds: int, warmup: int, runs: int
) -> dict[str, Any]:
    """runner.py in a subprocess (as devices/x86.py runs it, plus --no-accuracy) vs a bare session.run loop here."""
    import onnxruntime as ort

    arrays, _ = rn.load_inputs(str(inputs))
    # the very feeds runner.measure_latency builds: the same padded rows, cycled the same way
    feeds = [rn.padded_batch(arrays, i, 1, seq_len) for i in range(max(1, min(runs, 64)))]
    session = ort.InferenceSession(str(model), rn.ort_session_options(threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = [{k: f[k] for k in names} for f in feeds]

    def bare() -> float:
        session.run(None, feeds[0])
        for i in range(warmup):
            session.run(None, feeds[i % len(feeds)])
        samples = []
        for i in range(runs):
            f = feeds[i % len(feeds)]
            t0 = time.perf_counter()
            session.run(None, f)
            samples.append(time.perf_counter() - t0)
        return rn.LatencyStats.from_samples(samples).p50

    cmd = [
        sys.executable,
        str(RUNNER),
        "--model",
        str(model),
        "--inputs",
        str(inputs),
        "--threads",
        str(threads),
        "--warmup",
        str(warmup),
        "--runs",
        str(runs),
        "--batch",
        "1",
        "--seq-len",
        str(seq_len),
        "--no-accuracy",
    ]

    def via_runner() -> float:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"runner failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["latency_ms"]["p50"])

    pr, pbare = [], []
    for r in range(rounds):
        if r % 2 == 0:
            pr.append(via_runner())
            pbare.append(bare())
        else:
            pbare.append(bare())
            pr.append(via_runner())
    ratios = [a / b for a, b in zip(pr, pbare)]
    ratio = float(np.median(ratios))
    return {
        "runner_cmd": cmd,
        "runner_p50_ms_per_round": pr,
        "bare_p50_ms_per_round": pbare,
        "ratio_per_round": ratios,
        "runner_p50_ms": float(np.median(pr)),
        "bare_p50_ms": float(np.median(pbare)),
        "ratio": ratio,
        "overhead": ratio - 1.0,
    }


class TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, sampled from /proc every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop = pid, 0, threading.Event()

    def _tree_rss_kb(self) -> int:
        children: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                status = (d / "status").read_text()
            except OSError:
                continue
            ppid, kb = 0, 0
            for line in status.splitlines():
                if line.startswith("PPid:"):
                    ppid = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    kb = int(line.split()[1])
            children.setdefault(ppid, []).append(int(d.name))
            rss[int(d.name)] = kb
        total, todo = 0, [self.pid]
        while todo:
            p = todo.pop()
            total += rss.get(p, 0)
            todo.extend(children.get(p, []))
        return total

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak_kb = max(self.peak_kb, self._tree_rss_kb())


WALL_CHILD = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "w") as log:
    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT).returncode
wall = time.perf_counter() - t0
print(json.dumps({"rc": rc, "wall_s": wall, "max_child_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}))
"""


def wall_run(out_dir: Path, cache: Path, extra: list[str]) -> dict[str, Any]:
    """One compress-and-export in a fresh wrapper process, so RUSAGE_CHILDREN counts only that pipeline's tree."""
    cli = Path(sys.executable).with_name("compress-and-export")
    cmd = [str(cli), "--out", str(out_dir), *extra]
    env = dict(os.environ, EDGEPIPE_CACHE=str(cache))
    t0 = time.perf_counter()
    log = out_dir.with_name(out_dir.name + ".log")
    proc = subprocess.Popen(
        [sys.executable, "-c", WALL_CHILD, str(log), *cmd], stdout=subprocess.PIPE, text=True, env=env
    )
    sampler = TreeRssSampler(proc.pid)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.stop.set()
    sampler.join()
    outer = time.perf_counter() - t0
    res = json.loads(stdout.strip().splitlines()[-1])
    manifest = out_dir / "manifest.json"
    cache_hit = None
    if manifest.is_file():
        cache_hit = Manifest.load(out_dir).models["teacher"].get("cache_hit")
    return {
        "cmd": cmd,
        "EDGEPIPE_CACHE": str(cache),
        "rc": res["rc"],
        "wall_s": res["wall_s"],
        "wall_s_incl_wrapper": outer,
        "peak_rss_mb_largest_process": res["max_child_rss_mb"],
        "peak_rss_mb_tree_sum_sampled": sampler.peak_kb / 1024.0,
        "teacher_cache_hit": cache_hit,
        "log_tail": log.read_text()[-2000:] if res["rc"] and log.is_file() else None,
    }


def wall_by_size(sizes: list[int], extra: list[str]) -> dict[str, Any]:
    """How the pipeline's cost grows with the user's data: one cold `compress-and-export` (fresh cache, so
    the teacher's fine-tune is in it) per training-set size (`data.train_limit`), the rest as by default."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="edgepipe-wall-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            print(f"bench: compress-and-export, cold cache, {n} training examples", file=sys.stderr, flush=True)
            r = wall_run(Path(tmp) / "run", cache, [*extra, "--set", f"data.train_limit={n}"])
            metric = None
            if not r["rc"]:
                m = Manifest.load(Path(tmp) / "run")
                metric = getattr(m.models["pruned"].artifacts.get("onnx_int8"), f"test_{m.metric}", None)
            rows.append(
                {
                    "train_examples": n,
                    "wall_s": r["wall_s"],
                    "max_rss_mb": r["peak_rss_mb_largest_process"],
                    "metric": metric,
                    "rc": r["rc"],
                }
            )
    return {"how": "one cold run per size, each in its own process tree, one after another", "rows": rows}


def usual_int8_route(teacher_fp32: Path, digest: str, out: Path) -> dict[str, Any]:
    """The peer, built once per teacher file (`digest`, its sha256): ONNX Runtime's dynamic int8
    quantizer with its default operator set (MatMul, Gather, Attention, ...) and per-channel weights,
    on the teacher's ONNX."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgepipe.quiet import quiet_root_logger

    if not out.is_file():  # `out` is named by the teacher's hash
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp, quiet_root_logger():
            quantize_dynamic(str(teacher_fp32), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "sha256": sha256_file(out),
        "recipe": "onnxruntime.quantization.quantize_dynamic(per_channel=True, weight_type=QInt8), default op types",
        "source_sha256": digest,
    }


def teacher_tflite_fp32(
    run: Run, teacher_onnx: Path, digest: str, example: dict[str, np.ndarray], lengths: list[int], out: Path
) -> dict[str, Any] | None:
    """The teacher as fp32 TFLite with the shipped model's length signatures, built once per teacher file
    (`digest`: its ONNX's sha256) when the run did not convert it (a default run converts only the
    shipped model): from the teacher cache the run recorded, checked against the run's teacher ONNX on
    real examples. None when that cache is gone."""
    from edgepipe.quiet import offline_environment, quiet_libraries

    offline_environment()  # before torch and litert-torch load, as the CLI does: no start-up chatter
    quiet_libraries()
    from edgepipe.export.tflite import export_tflite_fp32
    from edgepipe.model.task_model import load_model
    from edgepipe.tokenized import TokenizedSplit

    entry = run.models["teacher"].get("cache_dir")
    if not entry or not (Path(entry) / "done.json").is_file():
        return None
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        split = TokenizedSplit(**{k: example[k] for k in rn.INPUTS}, labels=np.zeros(len(example["input_ids"])))
        export_tflite_fp32(load_model(Path(entry)), out, split, run.seq_len, lengths)
    rows = {k: v[:16] for k, v in example.items()}
    ref, got = rn.OnnxRuntimeModel(str(teacher_onnx), 1)(rows), rn.LiteRTModel(str(out), 1)(rows)
    diff = float(np.abs(ref - got).max())
    if not diff < 1e-3:  # the cache entry now holds another teacher
        out.unlink()
        return None
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "sha256": sha256_file(out),
        "recipe": f"edgepipe.export.tflite.export_tflite_fp32 of the run's cached teacher, length signatures {lengths}",
        "max_abs_vs_teacher_onnx": diff,
        "source_sha256": digest,
    }


def scaling(model_path: Path, arrays: dict[str, np.ndarray], threads_list: list[int], runs: int) -> dict[str, Any]:
    """p50 of the pruned int8 ONNX against sequence length (batch 1) and batch (at 64 tokens), one
    thread, and sequences per second at batch 32 per thread count. Rows beyond the split's 64
    tokens are padding (masked): the cost of the shape, which is what a fixed-shape app pays."""
    by_seq = []
    model = rn.OnnxRuntimeModel(str(model_path), 1)
    for seq in SCALING_SEQ:
        stats = rn.measure_latency(model, arrays, 3, runs, 1, seq)[0]
        by_seq.append({"seq_len": seq, "batch": 1, "p50_ms": stats.p50, "p90_ms": stats.p90})
    by_batch = []
    for batch in SCALING_BATCH:
        stats = rn.measure_latency(model, arrays, 2, max(5, runs // batch), batch, 64)[0]
        by_batch.append({"seq_len": 64, "batch": batch, "p50_ms": stats.p50, "per_sequence_ms": stats.p50 / batch})
    throughput = []
    for threads in threads_list:
        m = rn.OnnxRuntimeModel(str(model_path), threads)
        stats = rn.measure_latency(m, arrays, 2, max(5, runs // 8), 32, 64)[0]
        throughput.append({"threads": threads, "batch": 32, "seq_len": 64, "sequences_per_s": 32e3 / stats.p50})
    return {
        "model": str(model_path),
        "threads": 1,
        "by_seq_len": by_seq,
        "by_batch": by_batch,
        "throughput": throughput,
    }


def scaling_plot(doc: dict[str, Any], path: Path) -> None:
    """bench/scaling.svg: the run report's growth plot, titled with this machine."""
    title = f"pruned int8 ONNX — {doc['machine']['model']}"
    sizes = (doc["results"].get("wall_by_size") or {}).get("rows")
    svg = scaling_svg(doc["results"]["scaling"], title, sizes)  # inline form: a file gets its XML declaration back
    write_bytes_atomic(path, ('<?xml version="1.0" encoding="utf-8" standalone="no"?>\n' + svg).encode())


# --------------------------------------------------------------------------- main


def measure(args: argparse.Namespace) -> dict[str, Any]:
    np.random.seed(args.seed)
    run = Run(args.run_dir)
    before = machine_snapshot()
    t_start = time.perf_counter()
    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    runs = args.runs or (10 if quick else 50)
    warmup = 2 if quick else 10
    eval_limit = 200 if quick else None
    threads_list = [1] + ([os.cpu_count() or 1] if args.threads_all and (os.cpu_count() or 1) > 1 else [])
    seq_len = run.seq_len

    arts = {
        "teacher_onnx_fp32": run.artifact("teacher", "onnx_fp32"),
        "pruned_onnx_int8": run.artifact("pruned", "onnx_int8"),
        "pruned_tflite_int8": run.artifact("pruned", "tflite_int8"),
        "teacher_tflite_fp32": run.artifact("teacher", "tflite_fp32"),
    }
    for k in ("teacher_onnx_fp32", "pruned_onnx_int8"):
        if not arts[k] or arts[k].get("missing"):
            raise EdgepipeError(f"{run.dir} has no {k} artifact; it is needed for every goal")
    have = {k: bool(v) and not v.get("missing") for k, v in arts.items()}
    warnings = [
        f"{k}: file on disk differs from the manifest (run dir rewritten?)"
        for k, v in arts.items()
        if v and have[k] and not v["matches_manifest"]
    ]
    print("bench: the usual int8 route (ORT dynamic int8 of the teacher)", file=sys.stderr, flush=True)
    teacher_sha = arts["teacher_onnx_fp32"]["sha256"]
    peer_path = args.cache / f"{PEER}.{teacher_sha[:16]}.onnx"  # the run dir is only read
    arts[PEER] = usual_int8_route(Path(arts["teacher_onnx_fp32"]["path"]), teacher_sha, peer_path)
    have[PEER] = True
    teacher_in, pruned_in = run.inputs("teacher"), run.inputs("pruned")
    t_arrays, t_labels = rn.load_inputs(str(teacher_in))
    p_arrays, p_labels = rn.load_inputs(str(pruned_in))
    buckets = (
        sorted(rn.LiteRTModel(arts["pruned_tflite_int8"]["path"], 1).info.get("length_signatures", {}).values())[:-1]
        if have["pruned_tflite_int8"]
        else []
    )
    if have["pruned_tflite_int8"] and not have["teacher_tflite_fp32"]:
        print("bench: the teacher as fp32 TFLite (from the run's teacher cache)", file=sys.stderr, flush=True)
        built = teacher_tflite_fp32(
            run,
            Path(arts["teacher_onnx_fp32"]["path"]),
            teacher_sha,
            t_arrays,
            buckets,
            args.cache / f"teacher_tflite_fp32.{teacher_sha[:16]}.{'-'.join(map(str, buckets)) or 'fixed'}.tflite",
        )
        if built:
            arts["teacher_tflite_fp32"], have["teacher_tflite_fp32"] = built, True

    results: dict[str, Any] = {}

    # 1. size
    t_bytes = arts["teacher_onnx_fp32"]["bytes"]
    size = {"teacher_onnx_fp32_bytes": t_bytes, "goal": goal_text("size_ratio"), "rows": []}
    for key in ("pruned_onnx_int8", "pruned_tflite_int8"):
        if have[key]:
            ratio = t_bytes / arts[key]["bytes"]
            size["rows"].append(
                {"vs": key, "bytes": arts[key]["bytes"], "ratio": ratio, "status": goal_status("size_ratio", ratio)}
            )
        else:
            size["rows"].append(
                {"vs": key, "bytes": None, "ratio": None, "status": f"not measured ({key} missing from the run)"}
            )
    peer_ratio = arts[PEER]["bytes"] / arts["pruned_onnx_int8"]["bytes"]
    size["peer"] = {
        "vs": "pruned_onnx_int8",
        "peer_bytes": arts[PEER]["bytes"],
        "ratio": peer_ratio,
        "goal": goal_text("peer_size_ratio"),
        "status": goal_status("peer_size_ratio", peer_ratio),
    }
    results["size"] = size

    # 3. accuracy (threads don't change predictions; all threads for speed)
    acc_threads = os.cpu_count() or 1
    teacher_acc, n_t, _ = rn.measure_accuracy(
        rn.OnnxRuntimeModel(arts["teacher_onnx_fp32"]["path"], acc_threads), t_arrays, t_labels, limit=eval_limit
    )
    accuracy = {
        "teacher_onnx_fp32": {"accuracy": teacher_acc, "n_eval": n_t},
        "goal": goal_text("accuracy_kept"),
        "rows": [],
    }
    for key, make in (("pruned_onnx_int8", rn.OnnxRuntimeModel), ("pruned_tflite_int8", rn.LiteRTModel)):
        if not have[key]:
            accuracy["rows"].append(
                {"model": key, "accuracy": None, "kept": None, "status": f"not measured ({key} missing)"}
            )
            continue
        acc, n, _ = rn.measure_accuracy(make(arts[key]["path"], acc_threads), p_arrays, p_labels, limit=eval_limit)
        kept = acc / teacher_acc if teacher_acc else None
        accuracy["rows"].append(
            {"model": key, "accuracy": acc, "n_eval": n, "kept": kept, "status": goal_status("accuracy_kept", kept)}
        )
    peer_acc, n_peer, _ = rn.measure_accuracy(
        rn.OnnxRuntimeModel(arts[PEER]["path"], acc_threads), t_arrays, t_labels, limit=eval_limit
    )
    ours = next(r["accuracy"] for r in accuracy["rows"] if r["model"] == "pruned_onnx_int8")
    delta = (ours - peer_acc) * 100
    accuracy["peer"] = {
        "accuracy": peer_acc,
        "n_eval": n_peer,
        "pruned_onnx_int8_minus_peer_points": delta,
        "goal": goal_text("peer_accuracy_delta"),
        "status": goal_status("peer_accuracy_delta", delta),
    }
    results["accuracy"] = accuracy

    # 2, 5, 6 per thread count
    ci = cpuinfo()
    isa = best_isa(ci["int8_flags"])
    per_threads = []
    for threads in threads_list:
        entry: dict[str, Any] = {"threads": threads}
        print(f"bench: latency at {threads} thread(s)", file=sys.stderr, flush=True)

        def vs_pruned_onnx(a: str, length: int, n: int, t: int = threads) -> dict[str, Any]:
            """ONNX artifact `a` (on the teacher's inputs) against the pruned int8 ONNX, paired rounds."""
            pair = paired_latency(
                lambda: rn.OnnxRuntimeModel(arts[a]["path"], t),
                lambda: rn.OnnxRuntimeModel(arts["pruned_onnx_int8"]["path"], t),
                t_arrays,
                p_arrays,
                length,
                rounds,
                warmup,
                n,
            )
            return pair | {"a": a, "b": "pruned_onnx_int8"}

        ort_pair = vs_pruned_onnx("teacher_onnx_fp32", seq_len, runs)
        ort_pair["status"] = goal_status("latency_ratio", ort_pair["ratio"])
        entry["latency_onnxruntime"] = ort_pair
        peer_pair = vs_pruned_onnx(PEER, seq_len, runs)
        peer_pair["status"] = goal_status("peer_latency_ratio", peer_pair["ratio"])
        entry["latency_vs_peer"] = peer_pair
        # real lengths: each test text at its own length, batch 1 (ONNX takes any length; the split's
        # first texts, in the same order for both models)
        real = {
            key: vs_pruned_onnx(a, rn.REAL_LENGTHS, max(runs, 200))
            for key, a in (("teacher_onnx_fp32", "teacher_onnx_fp32"), ("peer", PEER))
        }
        lengths = t_arrays["attention_mask"][: max(runs, 200)].sum(axis=1)
        real["lengths"] = {"n": int(len(lengths)), "median": float(np.median(lengths)), "max": int(lengths.max())}
        if have["teacher_tflite_fp32"] and have["pruned_tflite_int8"] and buckets:
            # each text through the signature an app picks for it (export.tflite_buckets), both models
            real["litert"] = paired_latency(
                lambda t=threads: rn.LiteRTModel(arts["teacher_tflite_fp32"]["path"], t),
                lambda t=threads: rn.LiteRTModel(arts["pruned_tflite_int8"]["path"], t),
                t_arrays,
                p_arrays,
                rn.REAL_LENGTHS,
                rounds,
                warmup,
                max(runs, 200),
            ) | {"a": "teacher_tflite_fp32", "b": "pruned_tflite_int8", "length_signatures": [*buckets, seq_len]}
        else:
            why = (
                "no length signatures in the pruned TFLite (export.tflite_buckets: [])"
                if have["pruned_tflite_int8"]
                else ""
            )
            real["litert"] = {"ratio": None, "status": f"not measured: {why or 'a TFLite model is missing'}"}
        entry["latency_real_lengths"] = real
        if have["teacher_tflite_fp32"] and have["pruned_tflite_int8"]:
            lite = paired_latency(
                lambda t=threads: rn.LiteRTModel(arts["teacher_tflite_fp32"]["path"], t),
                lambda t=threads: rn.LiteRTModel(arts["pruned_tflite_int8"]["path"], t),
                t_arrays,
                p_arrays,
                seq_len,
                rounds,
                warmup,
                runs,
            )
            lite.update(
                a="teacher_tflite_fp32", b="pruned_tflite_int8", status=goal_status("latency_ratio", lite["ratio"])
            )
        else:
            missing = [k for k in ("teacher_tflite_fp32", "pruned_tflite_int8") if not have[k]]
            lite = {
                "ratio": None,
                "status": f"not measured ({', '.join(missing)} missing; on a copy of the run: "
                "compress-and-export --out COPY --set export.tflite_targets=[pruned,teacher])",
            }
        entry["latency_litert"] = lite

        print(f"bench: runner overhead at {threads} thread(s)", file=sys.stderr, flush=True)
        ov = runner_overhead(
            Path(arts["pruned_onnx_int8"]["path"]),
            pruned_in,
            threads,
            seq_len,
            rounds if not quick else 1,
            warmup,
            max(runs, 10) if quick else 100,
        )
        ov["status"] = goal_status("runner_overhead", ov["overhead"])
        entry["runner_overhead"] = ov

        macs = int(run.models["pruned"].macs)
        macs_seq = run.models["pruned"].macs_seq_len
        p50_s = ort_pair["b_p50_ms"] / 1e3
        achieved = 2 * macs / p50_s
        tp: dict[str, Any] = {
            "macs": macs,
            "macs_seq_len": macs_seq,
            "macs_seq_len_matches": macs_seq == seq_len,
            "ops_per_inference": 2 * macs,
            "p50_ms": ort_pair["b_p50_ms"],
            "achieved_int8_gops": achieved / 1e9,
            "note": "all of the model's MACs counted as int8 ops (a few, e.g. softmax/LayerNorm-adjacent, run in fp32): an upper bound on int8 work",
        }
        if isa and ci["mhz"]:
            peaks = []
            for row in ISA_TABLE:
                if all(f in ci["int8_flags"] for f in row["flags"]):
                    peak = threads * ci["mhz"] * 1e6 * row["int8_ops_per_cycle_per_core"]
                    peaks.append(
                        {"isa": row["isa"], "peak_int8_gops": peak / 1e9, "percent_of_peak": 100 * achieved / peak}
                    )
            sel = peaks[0]
            tp.update(
                status=goal_status("percent_of_peak", sel["percent_of_peak"]),
                isa_selected=isa["isa"],
                isa_selected_note=f"MLAS would select {isa['isa']} (inferred from /proc/cpuinfo flags: MLAS picks kernels by cpuid at run time and cannot be queried from Python)",
                peak_int8_gops=sel["peak_int8_gops"],
                percent_of_peak=sel["percent_of_peak"],
                peaks_by_isa=peaks,
                formula="peak = threads x MHz x int8 ops/cycle/core (estimate)",
            )
        else:
            tp.update(
                percent_of_peak=None,
                isa_selected=None,
                isa_selected_note="no int8 SIMD flags or frequency found: not estimated",
            )
        entry["throughput"] = tp
        per_threads.append(entry)
    results["per_threads"] = per_threads

    # 7. scaling (no goal)
    print("bench: scaling with sequence length and batch", file=sys.stderr, flush=True)
    results["scaling"] = scaling(Path(arts["pruned_onnx_int8"]["path"]), p_arrays, threads_list, 10 if quick else 40)

    # 4. wall
    if args.wall:
        with tempfile.TemporaryDirectory(prefix="edgepipe-wall-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            extra = ["--smoke"] if quick else []
            print("bench: compress-and-export, cold cache", file=sys.stderr, flush=True)
            cold = wall_run(Path(tmp) / "cold", cache, extra)
            print("bench: compress-and-export, cached teacher", file=sys.stderr, flush=True)
            warm = wall_run(Path(tmp) / "warm", cache, extra)
        for r, key in ((cold, "wall_s"), (warm, "wall_cached_s")):
            r["goal"] = goal_text(key)
            r["status"] = f"not met (failed, rc {r['rc']})" if r["rc"] else goal_status(key, r["wall_s"])
            if quick:
                r["status"] = "plumbing check only (--quick runs --smoke, not the default run)"
        results["wall"] = {
            "goal": f"cold {goal_text('wall_s')}, cached teacher {goal_text('wall_cached_s')}",
            "cold": cold,
            "cached_teacher": warm,
            "memory_note": "peak_rss_mb_largest_process = RUSAGE_CHILDREN ru_maxrss of a wrapper whose only child tree is the "
            "pipeline (the largest single process); peak_rss_mb_tree_sum_sampled = summed VmRSS of the whole tree, sampled every 0.2 s",
        }
    else:
        results["wall"] = {
            "goal": f"cold {goal_text('wall_s')}, cached teacher {goal_text('wall_cached_s')}",
            "status": NOT_MEASURED_WALL,
        }
    if args.wall_sizes:
        results["wall_by_size"] = wall_by_size(args.wall_sizes, ["--smoke"] if quick else [])

    after = machine_snapshot()
    doc = {
        "schema": 1,
        "mode": "quick (plumbing check: 1 round, few runs, 200 eval examples)" if quick else "full",
        "run_dir": str(run.dir),
        "manifest_sha256": run.manifest_sha256,
        "seed": args.seed,
        "seq_len": seq_len,
        "batch": 1,
        "rounds": rounds,
        "runs_per_round": runs,
        "warmup": warmup,
        "eval_limit": eval_limit,
        "threads": threads_list,
        "goals": GOALS,
        "artifacts": arts,
        "warnings": warnings,
        "machine": {**ci, "platform": platform.platform(), "load_before": before, "load_after": after},
        "isa_assumptions": ISA_TABLE,
        "versions": versions(),
        "results": results,
        "bench_seconds": time.perf_counter() - t_start,
    }
    doc["goal_status"] = goal_summary(doc)
    return doc


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}x"


def table_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    r = doc["results"]
    rows = []
    for s in r["size"]["rows"]:
        rows.append(
            (
                "1 size",
                f"teacher fp32 ONNX / {s['vs']} (bytes)",
                "-",
                fmt_ratio(s["ratio"]),
                r["size"]["goal"],
                s["status"],
            )
        )
    peer = r["size"]["peer"]
    rows.append(
        (
            "1 size vs peer",
            f"usual int8 route {peer['peer_bytes'] / 1e6:.1f} MB / pruned int8 ONNX (bytes)",
            "-",
            fmt_ratio(peer["ratio"]),
            peer["goal"],
            peer["status"],
        )
    )
    for e in r["per_threads"]:
        t = str(e["threads"])
        o, lt = e["latency_onnxruntime"], e["latency_litert"]
        rows.append(
            (
                "2 latency",
                f"ORT teacher fp32 {o['a_p50_ms']:.2f} ms / pruned int8 {o['b_p50_ms']:.3f} ms",
                t,
                fmt_ratio(o["ratio"]),
                goal_text("latency_ratio"),
                o["status"],
            )
        )
        if lt["ratio"] is not None:
            rows.append(
                (
                    "2 latency",
                    f"LiteRT teacher fp32 {lt['a_p50_ms']:.2f} ms / pruned int8 {lt['b_p50_ms']:.3f} ms",
                    t,
                    fmt_ratio(lt["ratio"]),
                    goal_text("latency_ratio"),
                    lt["status"],
                )
            )
        else:
            rows.append(
                ("2 latency", "LiteRT teacher fp32 / pruned int8", t, "—", goal_text("latency_ratio"), lt["status"])
            )
        vp = e["latency_vs_peer"]
        rows.append(
            (
                "2 latency vs peer",
                f"ORT usual int8 route {vp['a_p50_ms']:.2f} ms / pruned int8 {vp['b_p50_ms']:.3f} ms",
                t,
                fmt_ratio(vp["ratio"]),
                goal_text("peer_latency_ratio"),
                vp["status"],
            )
        )
        rl = e["latency_real_lengths"]
        for key, name in (
            ("teacher_onnx_fp32", "ORT teacher fp32"),
            ("peer", "ORT usual int8 route"),
            ("litert", "LiteRT teacher fp32"),
        ):
            x = rl.get(key)
            if isinstance(x, dict) and x.get("ratio") is not None:
                rows.append(
                    (
                        "2 latency, real lengths",
                        f"{name} {x['a_p50_ms']:.2f} ms / pruned int8 {x['b_p50_ms']:.3f} ms "
                        f"(median {rl['lengths']['median']:.0f} tokens)",
                        t,
                        fmt_ratio(x["ratio"]),
                        "no goal",
                        "reported",
                    )
                )
            elif x is not None:
                status = x if isinstance(x, str) else x["status"]
                rows.append(("2 latency, real lengths", f"{name} / pruned int8", t, "—", "no goal", status))
    a = r["accuracy"]
    for row in a["rows"]:
        fig = "—" if row["kept"] is None else f"{row['kept']:.2%}"
        desc = f"{row['model']} acc / teacher fp32 acc"
        if row["accuracy"] is not None:
            desc = f"{row['model']} {row['accuracy']:.4f} / teacher fp32 {a['teacher_onnx_fp32']['accuracy']:.4f} (n={row['n_eval']})"
        rows.append(("3 accuracy kept", desc, "-", fig, a["goal"], row["status"]))
    pa = a["peer"]
    rows.append(
        (
            "3 accuracy vs peer",
            f"pruned int8 ONNX - usual int8 route {pa['accuracy']:.4f} (n={pa['n_eval']}), points",
            "-",
            f"{pa['pruned_onnx_int8_minus_peer_points']:+.2f}",
            pa["goal"],
            pa["status"],
        )
    )
    w = r["wall"]
    if "cold" in w:
        for k in ("cold", "cached_teacher"):
            x = w[k]
            rows.append(
                (
                    "4 wall",
                    f"compress-and-export {k}: peak RSS {x['peak_rss_mb_largest_process']:.0f} MB largest process, {x['peak_rss_mb_tree_sum_sampled']:.0f} MB tree",
                    "all",
                    f"{x['wall_s']:.0f} s",
                    x.get("goal", w["goal"]),
                    x["status"],
                )
            )
    else:
        rows.append(("4 wall", "compress-and-export cold / cached teacher", "all", "—", w["goal"], w["status"]))
    for e in r["per_threads"]:
        ov = e["runner_overhead"]
        rows.append(
            (
                "5 runner overhead",
                f"runner.py p50 {ov['runner_p50_ms']:.3f} ms vs bare session.run {ov['bare_p50_ms']:.3f} ms",
                str(e["threads"]),
                f"{ov['overhead']:+.1%}",
                goal_text("runner_overhead"),
                ov["status"],
            )
        )
    for e in r["per_threads"]:
        tp = e["throughput"]
        if tp.get("percent_of_peak") is None:
            rows.append(
                (
                    "6 int8 throughput",
                    f"{tp['achieved_int8_gops']:.1f} GOPS achieved",
                    str(e["threads"]),
                    "—",
                    "no goal",
                    "peak not estimated",
                )
            )
            continue
        others = ", ".join(f"{p['percent_of_peak']:.1f}% of {p['isa']}" for p in tp["peaks_by_isa"][1:3])
        others = f" ({others})" if others else ""
        rows.append(
            (
                "6 int8 throughput",
                f"{tp['achieved_int8_gops']:.1f} GOPS vs est. {tp['isa_selected']} peak {tp['peak_int8_gops']:.0f} GOPS{others}",
                str(e["threads"]),
                f"{tp['percent_of_peak']:.1f}%",
                f"{goal_text('percent_of_peak')} at batch 1 (peak is an estimate)",
                tp.get("status", "reported"),
            )
        )
    sc = r.get("scaling")
    if sc:
        seq = ", ".join(f"{x['seq_len']}: {x['p50_ms']:.2f}" for x in sc["by_seq_len"])
        batch = ", ".join(f"{x['batch']}: {x['per_sequence_ms']:.3f}" for x in sc["by_batch"])
        tput = ", ".join(f"{x['threads']} thr: {x['sequences_per_s']:.0f}/s" for x in sc["throughput"])
        rows.append(("7 scaling", f"p50 ms by tokens (batch 1) {seq}", "1", "—", "no goal", "reported"))
        rows.append(("7 scaling", f"ms per sequence by batch (64 tokens) {batch}", "1", "—", "no goal", "reported"))
        rows.append(("7 scaling", f"throughput at batch 32, 64 tokens: {tput}", "-", "—", "no goal", "reported"))
    return rows + wall_size_rows(r.get("wall_by_size"))


def wall_size_rows(by_size: dict[str, Any] | None) -> list[tuple[str, ...]]:
    rows = []
    for x in (by_size or {}).get("rows", []):
        figure = f"{x['wall_s']:.0f} s" + (f", metric {x['metric']:.4f}" if x["metric"] is not None else "")
        if x["rc"]:
            figure = f"failed (rc {x['rc']})"
        rows.append(
            (
                "7 scaling",
                f"cold compress-and-export, {x['train_examples']} training examples",
                "-",
                figure,
                "no goal",
                "reported",
            )
        )
    return rows


def goal_summary(doc: dict[str, Any]) -> list[dict[str, str]]:
    """Every goal row as printed (goal, measure, threads, figure, target, status): met / not met / not
    measured, in results.json beside the raw figures."""
    keys = ("goal", "measure", "threads", "figure", "target", "status")
    return [dict(zip(keys, row)) for row in table_rows(doc) if row[-1] != "reported"]


def print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    m = doc["machine"]
    title = (
        f"edgepipe goals — {doc['run_dir']} — {m['model']}, {m['logical_cpus']} CPUs — seq {doc['seq_len']}, batch 1, "
        f"{doc['rounds']} rounds x {doc['runs_per_round']} runs — {doc['mode']}"
    )
    table = Table(title=title)
    for col in ("goal", "measure", "threads", "figure", "target", "status"):
        table.add_column(col)
    for row in table_rows(doc):
        status = row[-1]
        style = "green" if status == "met" else "red" if status.startswith("not met") else "yellow"
        table.add_row(*map(escape, row[:-1]), f"[{style}]{escape(status)}[/{style}]")
    console = Console(width=200)
    console.print(table)
    tp = doc["results"]["per_threads"][0]["throughput"]
    console.print(
        f"ISA: {tp.get('isa_selected_note')}. {tp.get('formula', '')}; frequency {m['mhz']} MHz from {m['mhz_source']}."
    )
    for row in doc["isa_assumptions"]:
        console.print(
            escape(
                f"  assumed {row['isa']}: {row['int8_ops_per_cycle_per_core']} int8 ops/cycle/core — {row['assumption']}"
            )
        )
    console.print(
        f"load average before {doc['machine']['load_before']['loadavg']}, after {doc['machine']['load_after']['loadavg']}; took {doc['bench_seconds']:.0f} s"
    )
    for w in doc["warnings"]:
        console.print(f"[yellow]warning: {escape(w)}[/yellow]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, nargs="?", default=Path("runs/demo"))
    ap.add_argument(
        "--threads-all",
        action="store_true",
        help=f"also measure at all {os.cpu_count()} threads (default: 1 thread only)",
    )
    ap.add_argument(
        "--wall",
        action="store_true",
        help="also time two fresh compress-and-export runs (cold cache, cached teacher): ~25 min",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="plumbing check: 1 round, few runs, 200 eval examples (--wall runs --smoke)",
    )
    ap.add_argument(
        "--wall-sizes",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="also time one cold compress-and-export per training-set size N (data.train_limit): ~4-8 min each",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results.json"))
    ap.add_argument("--rounds", type=int, default=None, help="paired rounds (default 5, quick 1)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per model per round (default 50, quick 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--cache",
        type=Path,
        default=default_cache_dir() / "bench",
        help="where the usual int8 route's ONNX is kept, keyed by the teacher's hash (default: $EDGEPIPE_CACHE/bench)",
    )
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        doc = measure(args)
    except EdgepipeError as e:
        print(f"bench: {e}", file=sys.stderr)
        return e.exit_code
    doc["table"] = [list(row) for row in table_rows(doc)]
    write_json_atomic(args.out, doc)
    if "scaling" in doc["results"]:
        scaling_plot(doc, args.out.with_name("scaling.svg"))
    print_table(doc)
    print(f"wrote {args.out}", file=sys.stderr)
    # the run's own report shows what was measured on it (edgepipe.app.report.goals_section)
    write_json_atomic(args.run_dir / GOALS_FILE, doc)
    name, manifest = load_run(args.run_dir)
    write_report(args.run_dir, [(name, manifest)], {name: doc})
    print(f"wrote {args.run_dir / GOALS_FILE} and the run's report", file=sys.stderr)
    return 0
