"""The shipped model in each format, side by side: ONNX int8, TFLite int8, ExecuTorch int8 and 8da4w.

    python -m bench.formats RUN_DIR [--role pruned] [--threads 1 2] [--rounds 5] [--runs 50]

For each artifact the run has (build the .pte ones with `--set export.executorch=true`): file
size, the task's metric on the test split measured by the runner, and per thread count p50/p90
latency at batch 1 and the run's sequence length, first-inference time, load time (runtime
import + model load) and peak RSS. Each format runs in its own runner process
(devices/standalone/runner.py, the code a device runs), and the rounds interleave the formats
(A B C D, then D C B A, ...), so all see the same machine load; latency = median over rounds of
each round's p50/p90. Only x86 here: the emulated ARM board cannot run .pte (PyPI's aarch64
torch 2.13.0 is a CUDA build). Writes bench/formats.json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

from edgepipe.devices import x86
from edgepipe.devices.standalone.runner import cpu_model
from edgepipe.manifest import Manifest
from edgepipe.measurement import Measurement
from edgepipe.rundir import write_json_atomic

FORMATS = ("onnx_int8", "tflite_int8", "executorch_int8", "executorch_8da4w")


def measure(run_dir: Path, role: str, threads: list[int], rounds: int, runs: int) -> dict[str, Any]:
    manifest = Manifest.load(run_dir)
    model = manifest.models[role]
    arts = {name: model.artifacts[name] for name in FORMATS if name in model.artifacts}
    missing = [name for name in FORMATS if name not in arts]
    inputs = run_dir / model.eval_inputs.path
    seq = int(manifest.config["export"]["seq_len"])
    rows: dict[str, dict[str, Any]] = {
        name: {"bytes": art.bytes, "mb": art.bytes / 1e6, "host_metric": art.get(f"test_{manifest.metric}")}
        for name, art in arts.items()
    }
    for name in arts:  # the metric, once, by the runner itself
        r = x86.benchmark(
            run_dir / arts[name].path, inputs, Measurement(runs=1, warmup=0, seq_len=seq, metric=manifest.metric)
        )
        rows[name] |= {"device_metric": r.metric_value, "n_eval": r.n_eval, "runtime": r.runtime}
    order = list(arts)
    for t in threads:
        samples: dict[str, list[Any]] = {name: [] for name in order}
        for i in range(rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                m = Measurement(runs=runs, warmup=10, threads=t, seq_len=seq, accuracy=False)
                samples[name].append(x86.benchmark(run_dir / arts[name].path, inputs, m))
        for name in order:
            got = samples[name]
            rows[name][f"threads_{t}"] = {
                "p50_ms": statistics.median(r.latency_ms.p50 for r in got),
                "p90_ms": statistics.median(r.latency_ms.p90 for r in got),
                "first_inference_ms": statistics.median(r.first_inference_ms for r in got),
                "load_ms": statistics.median(r.init_ms for r in got),
                "peak_rss_mb": statistics.median(r.peak_rss_mb for r in got),
                "rounds": len(got),
            }
    return {
        "run": str(run_dir),
        "role": role,
        "metric": manifest.metric,
        "seq_len": seq,
        "batch": 1,
        "runs_per_round": runs,
        "method": "one runner process per format and round; rounds interleaved (ABCD, DCBA, ...); median over rounds",
        "device": {"kind": "x86", "cpu": cpu_model(), "machine": platform.machine(), "emulated": None},
        "formats": rows,
        "not_in_run": missing,
    }


def table(result: dict[str, Any], threads: list[int]) -> str:
    head = ["format", "MB", result["metric"], *(f"p50/p90 ms t{t}" for t in threads), "first ms", "load ms", "RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in result["formats"].items():
        t0 = r[f"threads_{threads[0]}"]
        lat = [f"{r[f'threads_{t}']['p50_ms']:.2f} / {r[f'threads_{t}']['p90_ms']:.2f}" for t in threads]
        metric = r["device_metric"]
        cells = [name, f"{r['mb']:.2f}", "-" if metric is None else f"{metric * 100:.2f} %", *lat]
        cells += [f"{t0['first_inference_ms']:.1f}", f"{t0['load_ms']:.0f}", f"{t0['peak_rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--role", default="pruned")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("bench/formats.json"))
    args = ap.parse_args(argv)
    result = measure(args.run_dir, args.role, args.threads, args.rounds, args.runs)
    print(table(result, args.threads))
    if result["not_in_run"]:
        print(f"not in the run: {', '.join(result['not_in_run'])}")
    write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
