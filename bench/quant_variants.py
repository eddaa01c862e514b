"""int8 ONNX variants of a run's model, measured side by side against its fp32 ONNX.

    python -m bench.quant_variants runs/demo [--role pruned] [--threads 1]

For each variant (format x activation type x per-channel x calibration x op set x
embedding x graph fusion): file size, test accuracy, argmax agreement with fp32, and p50 latency at
batch 1 and the run's sequence length. A `fuse` variant first rewrites the fp32 graph with one family
of onnxscript's ONNX Runtime fusions (what `optimize_for_ort` chains: SkipLayerNormalization, Gelu /
BiasGelu, MultiHeadAttention / Attention, or all of them) and quantizes that; its row also gives the
fused fp32 graph's parity and latency against the unfused one (`--fusions`: only those rows). Latency of fp32 and the variant is measured in
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
from edgepipe.pipeline.fusion import fuse_graph
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
    {"fuse_attention": False},
]
FUSION_VARIANTS = [  # each against the same unfused fp32 graph; {} = the default (attention fused by quantize)
    {"fuse_attention": False},
    {},
    {"fuse": "attention", "fuse_attention": False},
    {"fuse": "layernorm", "fuse_attention": False},
    {"fuse": "gelu", "fuse_attention": False},
    {"fuse": "all", "fuse_attention": False},
    {"fuse": "all", "op_types": ["MatMul", "Gemm"], "fuse_attention": False},
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--role", default="pruned", choices=["pruned", "student"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench/quant_variants.json"))
    ap.add_argument("--quick", action="store_true", help="two variants, two rounds (a plumbing check)")
    ap.add_argument("--fusions", action="store_true", help="the default and the graph-fusion variants only")
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

    def against_fp32(model: Path) -> dict:
        """`model` and the fp32 graph in alternating rounds (bench.goals.paired_latency)."""
        return paired_latency(
            lambda: OnnxRuntimeModel(str(model), args.threads),
            lambda: OnnxRuntimeModel(str(fp32), args.threads),
            arrays,
            arrays,
            seq_len,
            rounds=2 if args.quick else 5,
            warmup=10,
            runs=100,
        )

    with tempfile.TemporaryDirectory() as tmp:
        variants = FUSION_VARIANTS if args.fusions else VARIANTS
        for variant in variants[:2] if args.quick else variants:
            settings = {k: v for k, v in variant.items() if k != "fuse"}
            qcfg = QuantizeConfig(**(cfg.quantize.model_dump() | {"max_accuracy_drop": 100.0} | settings))
            out = Path(tmp) / "int8.onnx"
            source, fused = fp32, {}
            t0 = time.perf_counter()
            try:
                if "fuse" in variant:
                    source = Path(tmp) / "fused.fp32.onnx"
                    fused = {"fusions": fuse_graph(fp32, source, variant["fuse"])}
                report = quantize(source, out, splits.train, splits.val, qcfg, seq_len, task=task)
            except Exception as e:
                rows.append({"variant": variant, "error": f"{type(e).__name__}: {str(e)[:120]}"})
                continue
            seconds = time.perf_counter() - t0
            q_logits = OrtModel(out).predict(test)
            pair = against_fp32(out)
            p_int8, p_fp32, ratio = pair["a_p50_ms"], pair["b_p50_ms"], pair["ratio"]
            if fused:
                fused_logits = OrtModel(source).predict(test)
                fused_pair = against_fp32(source)
                fused |= {
                    "fused_fp32_max_abs": float(abs(fused_logits - f_logits).max()),
                    "fused_fp32_nodes": node_count(source),
                    "fp32_nodes": node_count(fp32),
                    "fused_fp32_latency_ratio": round(fused_pair["ratio"], 3),
                }
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
                    "int8_nodes": node_count(out),
                    "attention_fused_by_quantize": report["attention_fusion"]["used"],
                }
                | fused
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"int8 variants of {args.role} ({args.threads} thread(s), seq {seq_len}, batch 1)")
    cols = ["variant", "MB", "x smaller", "test acc", "fp32 acc", "agree", "p50 ms", "fp32 p50", "latency vs fp32"]
    cols += ["int8 nodes", "fused fp32 vs fp32"] if args.fusions else []
    for col in cols:
        table.add_column(col)
    for r in rows:
        if "error" in r:
            table.add_row(json.dumps(r["variant"]), r["error"], *[""] * (len(cols) - 2))
            continue
        extra = []
        if args.fusions:
            extra = [
                str(r["int8_nodes"]),
                f"{r['fused_fp32_latency_ratio']}x ({r['fp32_nodes']} -> {r['fused_fp32_nodes']} nodes)"
                if "fusions" in r
                else "",
            ]
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
            *extra,
        )
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"run": str(args.run_dir), "role": args.role, "threads": args.threads, "rows": rows}, indent=2)
    )
    return 0


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


if __name__ == "__main__":
    sys.exit(main())
