"""LiteRT's `benchmark_model` binary on a device without python: flags, output parsing, and
accuracy through its input/output files.

Latency: one invocation with --num_runs/--warmup_runs, fed a real padded example through
--input_layer_value_files (raw tensor bytes). benchmark_model prints avg/std/min/max
(newer builds also p5/median/p95) but not p90/p99: those stay None rather than guessed.

Accuracy: one invocation per example (--num_runs=1), inputs cut on the device with `dd`
from one file per input (3 pushes instead of 3 x N), logits written by --output_filepath
(raw bytes of every output tensor after the last run) and appended to one file pulled at the end.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.devices.standalone.runner import INPUTS, METRICS, load_inputs
from edgepipe.errors import DeviceError
from edgepipe.measurement import Measured, Measurement
from edgepipe.runtimes.litert import LiteRTModel

_NUM = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_RUN_LINE = re.compile(
    rf"count=(?P<count>{_NUM}) first=(?P<first>{_NUM}) curr={_NUM} min=(?P<min>{_NUM}) max=(?P<max>{_NUM}) "
    rf"avg=(?P<avg>{_NUM}) std=(?P<std>{_NUM})(?: p5=(?P<p5>{_NUM}) median=(?P<median>{_NUM}) p95=(?P<p95>{_NUM}))?"
)
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUM}), First inference: (?P<first>{_NUM}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUM}), Inference \(avg\): (?P<avg>{_NUM})"
)
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init=(?P<init>{_NUM}) overall=(?P<overall>{_NUM})"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<peak>{_NUM})")
_DELEGATE = re.compile(r"Replacing (?P<n>\d+) out of (?P<m>\d+) node\(s\) with delegate \((?P<name>[^)]+)\)")


def parse_output(text: str) -> dict[str, Any]:
    """The numbers of one benchmark_model run, in milliseconds. Raises ValueError if there are none."""
    runs = [m for m in _RUN_LINE.finditer(text)]
    timings = _TIMINGS.search(text)
    if not runs or timings is None:
        errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
        raise ValueError(errors[-1] if errors else "no timing lines in benchmark_model output")
    run = runs[-1]  # the warm-up line comes first
    us = {k: float(v) for k, v in run.groupdict().items() if v is not None}
    result: dict[str, Any] = {
        "latency_ms": {
            "p50": us["median"] / 1e3 if "median" in us else None,
            "p90": None,
            "p99": None,
            "mean": us["avg"] / 1e3,
            "std": us["std"] / 1e3,
            "min": us["min"] / 1e3,
            "max": us["max"] / 1e3,
            "n": int(us["count"]),
        },
        "init_ms": float(timings["init"]) / 1e3,
        "first_inference_ms": float(timings["first"]) / 1e3,
        "warmup_avg_ms": float(timings["warmup"]) / 1e3,
    }
    if mem := _MEMORY.search(text):
        result["memory_footprint_mb"] = {"init": float(mem["init"]), "overall": float(mem["overall"])}
    if peak := _PEAK.search(text):
        result["peak_rss_mb"] = float(peak["peak"])
    delegate = _DELEGATE.search(text)
    result["delegate"] = f"{delegate['name']} ({delegate['n']}/{delegate['m']} nodes)" if delegate else "none reported"
    return result


def input_layout(model: Path, seq_len: int | None = None) -> list[dict[str, Any]]:
    """Input names, dtypes and [1, L] shapes in runner order (sorted by name, as the standalone runner feeds them).
    A model with length signatures: those of the signature taking `seq_len` (else the default), named in
    `signature`; benchmark_model refuses such a model unless told which signature to run
    ("Signature not specified or incorrect for graph with multiple signatures")."""
    m = LiteRTModel(model)
    if not m.buckets:
        details, signature = m.inputs, None
    else:
        signature = next((name for n, name, *_ in m.buckets if n == seq_len), m.buckets[-1][1])
        by_arg = m.interpreter.get_signature_runner(signature).get_input_details()
        details = [by_arg[k] for k in sorted(by_arg)]  # args_0, args_1, ...: argument order
    return [
        {
            "name": d["name"],
            "dtype": np.dtype(d["dtype"]),
            "shape": [int(x) for x in d["shape"]],
            "signature": signature,
        }
        for d in details
    ]


def _escape(name: str) -> str:
    return name.replace(":", "::")


def write_inputs(layout: list[dict[str, Any]], arrays: dict[str, np.ndarray], rows: int, directory: Path) -> list[Path]:
    """One raw file per input: `rows` examples padded/trimmed to the model's length, back to back."""
    files = []
    for detail, key in zip(layout, INPUTS):
        length = detail["shape"][1]
        a = arrays[key][:rows, :length]
        if a.shape[1] < length:
            a = np.pad(a, ((0, 0), (0, length - a.shape[1])))
        path = directory / f"{key}.bin"
        np.ascontiguousarray(a, dtype=detail["dtype"]).tofile(path)
        files.append(path)
    return files


def flags(
    binary: str,
    model: str,
    layout: list[dict[str, Any]],
    value_files: list[str],
    bench: Measurement,
    runs: int,
    warmup: int,
) -> list[str]:
    argv = [
        binary,
        f"--graph={model}",
        f"--num_threads={bench.threads}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        "--min_secs=0",
        "--warmup_min_secs=0",
        "--max_secs=100000",
        "--input_layer=" + ",".join(d["name"] for d in layout),
        "--input_layer_shape=" + ":".join(",".join(map(str, d["shape"])) for d in layout),
        "--input_layer_value_files="
        + ",".join(f"{_escape(d['name'])}:{_escape(f)}" for d, f in zip(layout, value_files)),
    ]
    if layout[0].get("signature"):  # only for models with several: older binaries lack the flag
        argv.append(f"--signature_to_run_for={layout[0]['signature']}")
    return bench.pinned(argv)


def run(transport, workdir: str, model: Path, inputs: Path, bench: Measurement, timeout_s: float) -> Measured:
    arrays, labels = load_inputs(str(inputs))
    layout = input_layout(model, bench.seq_len)  # the metric pass too runs that one signature
    n = len(labels) if bench.max_eval is None else min(bench.max_eval, len(labels))
    n = n if bench.accuracy else 1  # example 0 feeds the latency run
    binary, remote_model = posixpath.join(workdir, "benchmark_model"), posixpath.join(workdir, model.name)
    transport.push(model, remote_model)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_inputs(layout, arrays, n, Path(tmp))
        remote_files = [posixpath.join(workdir, f.name) for f in files]
        for f, r in zip(files, remote_files):
            transport.push(f, r)
        # latency on example 0: cut it out with dd like the accuracy loop does
        row_files = [posixpath.join(workdir, f"row_{f.name}") for f in files]
        cut = " && ".join(
            shlex.join(
                ["dd", f"if={src}", f"of={dst}", f"bs={d['dtype'].itemsize * d['shape'][1]}", "count=1", "skip=0"]
            )
            + " 2>/dev/null"
            for src, dst, d in zip(remote_files, row_files, layout)
        )
        res = transport.run(
            cut + " && " + shlex.join(flags(binary, remote_model, layout, row_files, bench, bench.runs, bench.warmup)),
            timeout_s,
        )
        if res.returncode is None:
            raise DeviceError(
                f"{transport.name}: connection lost while benchmarking {model.name}; finished results are kept, rerun to resume"
            )
        try:
            result = parse_output(res.stdout + "\n" + res.stderr)
        except ValueError as e:
            raise DeviceError(f"{transport.name}: benchmark_model failed on {model.name}: {e}") from None
        logits_path = posixpath.join(workdir, "logits.bin")
        logits = None
        if bench.accuracy:
            loop = (
                f"rm -f {shlex.quote(logits_path)}; i=0; while [ $i -lt {n} ]; do "
                + " && ".join(
                    shlex.join(["dd", f"if={src}", f"of={dst}", f"bs={d['dtype'].itemsize * d['shape'][1]}", "count=1"])
                    + ' skip="$i" 2>/dev/null'
                    for src, dst, d in zip(remote_files, row_files, layout)
                )
                + " && "
                + shlex.join(
                    flags(binary, remote_model, layout, row_files, bench, 1, 0)
                    + [f"--output_filepath={workdir}/out.bin"]
                )
                + f" >/dev/null 2>&1 && cat {shlex.quote(workdir + '/out.bin')} >> {shlex.quote(logits_path)} || exit 3; i=$((i+1)); done"
            )
            acc_res = transport.run(loop, timeout_s)
            if acc_res.returncode is None:
                raise DeviceError(
                    f"{transport.name}: connection lost while evaluating {model.name}; finished results are kept, rerun to resume"
                )
            if acc_res.returncode != 0:
                raise DeviceError(
                    f"{transport.name}: benchmark_model failed while evaluating {model.name} (exit {acc_res.returncode})"
                )
            local = Path(tmp) / "logits.bin"
            transport.pull(logits_path, local)
            logits = np.fromfile(local, dtype=np.float32)
    transport.run(shlex.join(["rm", "-f", remote_model, logits_path, *remote_files, *row_files]), 60)
    value = None
    if logits is not None:
        if logits.size % n:
            raise DeviceError(
                f"{transport.name}: benchmark_model wrote {logits.size} logits for {n} examples; is the output float32?"
            )
        value = METRICS[bench.metric](logits.reshape(n, -1), labels[:n])
    return Measured.model_validate(
        result
        | {
            "model": model.name,
            "model_bytes": model.stat().st_size,
            "runtime": "litert (benchmark_model)",
            "runtime_version": None,
            "threads": bench.threads,
            "batch": 1,
            "seq_len": layout[0]["shape"][1],
            "warmup": bench.warmup,
            "metric": bench.metric,
            "metric_value": value,
            "accuracy": value if bench.metric == "accuracy" else None,
            "n_eval": n if value is not None else 0,
            "peak_rss_mb": result.get("peak_rss_mb"),
            "emulated": None,
        }
    )
