"""The shipped model in each format, side by side: ONNX int8, TFLite int8, ExecuTorch int8 and 8da4w.

    python -m bench.formats RUN_DIR [--role pruned] [--threads 1 2] [--rounds 5] [--runs 50]
    python -m bench.formats RUN_DIR --device arm:USER@HOST:PORT --fleet rig.yaml --max-eval 200 --rounds 2

For each artifact the run has (build the .pte ones with `--set export.executorch=true`): file
size, the task's metric on the test split measured by the runner, and per thread count p50/p90
latency at batch 1 and the run's sequence length, first-inference time, load time (runtime
import + model load) and peak RSS. Each format runs in its own runner process
(devices/standalone/runner.py, the code a device runs), and the rounds interleave the formats
(A B C D, then D C B A, ...), so all see the same machine load; latency = median over rounds of
each round's p50/p90. `--device` measures on a board or phone instead (connection settings from
`--fleet`), e.g. the emulated board built with `tools/rig/arm_board.sh --executorch` and served by
`tools/rig/serve.py --executorch`: its latencies are qemu's, labelled emulated. Writes
bench/formats.json (bench/formats.DEVICE.json for a device).
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


def measure(
    run_dir: Path, role: str, threads: list[int], rounds: int, runs: int, device=None, max_eval: int | None = None
) -> dict[str, Any]:
    """`device`: an opened device (devices.pool.open_device); None: this machine, x86."""
    bench = device.benchmark if device is not None else x86.benchmark
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
        r = bench(
            run_dir / arts[name].path,
            inputs,
            Measurement(runs=1, warmup=0, seq_len=seq, metric=manifest.metric, max_eval=max_eval),
        )
        rows[name] |= {"device_metric": r.metric_value, "n_eval": r.n_eval, "runtime": r.runtime}
    order = list(arts)
    device_info: dict[str, Any] = {}
    for t in threads:
        samples: dict[str, list[Any]] = {name: [] for name in order}
        for i in range(rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                m = Measurement(runs=runs, warmup=10, threads=t, seq_len=seq, accuracy=False)
                got = bench(run_dir / arts[name].path, inputs, m)
                samples[name].append(got)
                device_info = {"name": got.device} | (got.device_info or {})
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
        "device": device_info
        if device is not None
        else {"kind": "x86", "cpu": cpu_model(), "machine": platform.machine(), "emulated": None},
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
    ap.add_argument(
        "--out", type=Path, default=None, help="default bench/formats.json (x86), bench/formats.DEVICE.json"
    )
    ap.add_argument(
        "--device", default=None, help="measure there instead of this machine: arm:USER@HOST:PORT, android:SERIAL"
    )
    ap.add_argument("--fleet", type=Path, default=None, help="fleet YAML with the device's connection settings")
    ap.add_argument("--max-eval", type=int, default=None, help="the metric on the first N test examples (slow devices)")
    args = ap.parse_args(argv)
    device = None
    if args.device is not None:
        from edgepipe.config import BenchConfig, load_fleet
        from edgepipe.devices.pool import open_device

        cfg = BenchConfig(fleet=load_fleet(args.fleet) if args.fleet else [])
        device = open_device(args.device, *cfg.connection(args.device))
    try:
        result = measure(args.run_dir, args.role, args.threads, args.rounds, args.runs, device, args.max_eval)
    finally:
        if device is not None:
            device.close()
    slug = "" if args.device is None else "." + "".join(c if c.isalnum() else "_" for c in args.device.split("@")[0])
    out = args.out or Path(f"bench/formats{slug}.json")
    print(table(result, args.threads))
    if result["not_in_run"]:
        print(f"not in the run: {', '.join(result['not_in_run'])}")
    write_json_atomic(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
