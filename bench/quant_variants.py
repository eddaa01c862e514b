"""int8 ONNX variants of a run's model, measured side by side against its fp32 ONNX.

    python -m bench.quant_variants runs/demo [--role pruned] [--threads 1]

For each variant (format x activation type x per-channel x calibration x op set x
embedding): file size, test accuracy, argmax agreement with fp32, and p50 latency at
batch 1 and the run's sequence length. Latency of fp32 and the variant is measured in
alternating rounds (ABBA order, bench.goals.paired_latency) in one process, so both see the
same machine load; the table reports the median over rounds of the ratio. Prints a table and
writes bench/quant_variants.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.goals import paired_latency
from edgepipe.config import QuantizeConfig, build_config, load_yaml
from edgepipe.devices.standalone.runner import OnnxRuntimeModel
from edgepipe.manifest import Manifest
from edgepipe.model.load import load_tokenizer, teacher_source
from edgepipe.model.task_model import load_model
from edgepipe.pipeline.data import load_dataset
from edgepipe.pipeline.quantize import quantize
from edgepipe.runtimes.onnxruntime import OrtModel

VARIANTS = [
    {},
    {"op_types": ["MatMul", "Gemm"]},
    {"method": "percentile"},
    {"method": "entropy", "op_types": ["MatMul", "Gemm"]},
    {"activation_type": "int8"},
    {"per_channel": False},
    {"format": "qoperator"},
    {"embedding": "int8"},
    {"embedding": "fp32"},
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--role", default="pruned", choices=["pruned", "student"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/quant_variants.json"))
    ap.add_argument("--quick", action="store_true", help="two variants, two rounds (a plumbing check)")
    args = ap.parse_args(argv)

    manifest = Manifest.load(args.run_dir)
    cfg = build_config(load_yaml(args.run_dir / "config.yaml"))
    fp32 = args.run_dir / manifest.models[args.role].artifacts["onnx_fp32"].path
    model_dir = args.run_dir / args.role
    tokenizer = load_tokenizer(model_dir if (model_dir / "vocab.txt").is_file() else teacher_source(cfg.teacher.path))
    task = load_model(model_dir).task  # fails early on a damaged run
    dataset, _ = load_dataset(cfg.data)
    splits = dataset.tokenize(tokenizer, cfg.data.max_length)
    test = splits.test
    arrays = test.inputs()
    seq_len = cfg.export.seq_len
    f_logits = OrtModel(fp32).predict(test)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS[:2] if args.quick else VARIANTS:
            qcfg = QuantizeConfig(**(cfg.quantize.model_dump() | {"max_accuracy_drop": 100.0} | variant))
            out = Path(tmp) / "int8.onnx"
            t0 = time.perf_counter()
            try:
                quantize(fp32, out, splits.train, splits.val, qcfg, seq_len, task=task)
            except Exception as e:
                rows.append({"variant": variant, "error": f"{type(e).__name__}: {str(e)[:120]}"})
                continue
            seconds = time.perf_counter() - t0
            q_logits = OrtModel(out).predict(test)
            pair = paired_latency(
                lambda out=out: OnnxRuntimeModel(str(out), args.threads),
                lambda: OnnxRuntimeModel(str(fp32), args.threads),
                arrays,
                arrays,
                seq_len,
                rounds=2 if args.quick else 5,
                warmup=10,
                runs=100,
            )
            p_int8, p_fp32, ratio = pair["a_p50_ms"], pair["b_p50_ms"], pair["ratio"]
            rows.append(
                {
                    "variant": variant or {"default": True},
                    "size_mb": round(out.stat().st_size / 1e6, 2),
                    "size_ratio": round(fp32.stat().st_size / out.stat().st_size, 2),
                    "test_accuracy": round(task.score(q_logits, test.labels), 4),
                    "fp32_test_accuracy": round(task.score(f_logits, test.labels), 4),
                    "agreement": round(task.agreement(q_logits, f_logits), 4),
                    "p50_ms": round(p_int8, 3),
                    "fp32_p50_ms": round(p_fp32, 3),
                    "latency_ratio": round(ratio, 3),
                    "quantize_s": round(seconds, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"int8 variants of {args.role} ({args.threads} thread(s), seq {seq_len}, batch 1)")
    for col in ("variant", "MB", "x smaller", "test acc", "fp32 acc", "agree", "p50 ms", "fp32 p50", "latency vs fp32"):
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(json.dumps(r["variant"]), r["error"], *[""] * 7)
            continue
        table.add_row(
            json.dumps(r["variant"]),
            f"{r['size_mb']}",
            f"{r['size_ratio']}",
            f"{r['test_accuracy']:.2%}",
            f"{r['fp32_test_accuracy']:.2%}",
            f"{r['agreement']:.1%}",
            f"{r['p50_ms']}",
            f"{r['fp32_p50_ms']}",
            f"{r['latency_ratio']}x",
        )
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"run": str(args.run_dir), "role": args.role, "threads": args.threads, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
