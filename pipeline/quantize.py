"""Quantize stage (ONNX): static int8, calibrated on real examples, held to an accuracy budget.
Reads `quantize:` and `export.seq_len`.

Built on `onnxruntime.quantization` (pre-processing, calibration, QDQ insertion); edgepipe
adds three things it does not do:

* the word-embedding table stored in 4 bits (default: ONNX Runtime's `GatherBlockQuantized`
  contrib op, one fp16 scale per 32 values, then a Cast to fp32) or int8 (`Gather(int8 table)
  -> Cast -> Mul(Gather(row scales))`), gathered *before* dequantization: ORT's QDQ pattern
  `DequantizeLinear(table) -> Gather` would dequantize the whole table on every run. The table
  is most of a pruned model's bytes; 4 bits took the default model from 8.9 to 6.3 MB at the
  same test accuracy (81.65 % int8 rows, 82.0 % int4 blocks; README, "Size");
* an accuracy budget on the validation split, in the task's metric: if int8 loses more than
  `max_accuracy_drop` points (or agrees with fp32 less than `min_agreement`), node groups
  (the PyTorch modules the nodes came from) are ranked by how much quantizing them alone
  moves the logits, and the worst are kept in fp32 until the budget holds; dynamic int8
  is the fallback only when static cannot meet it;
* a calibration cache (ORT's `calibration_cache_path`), so that loop re-quantizes
  without re-calibrating;
* attention fused into ONNX Runtime's MultiHeadAttention before quantization (pipeline/fusion.py,
  `fuse_attention`), checked against the unfused graph: fewer quantize/dequantize pairs.
"""

from __future__ import annotations

import ast
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgepipe import tasks
from edgepipe.arch.base import Architecture
from edgepipe.config import QuantizeConfig
from edgepipe.errors import DataError, ModelError
from edgepipe.manifest import Artifact
from edgepipe.pipeline.fusion import fused_attention
from edgepipe.progress import Progress, Silent
from edgepipe.quiet import quiet_root_logger
from edgepipe.rundir import atomic_path
from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.stages import Result, Stages
from edgepipe.tasks.base import Task
from edgepipe.tokenized import INPUTS, TokenizedData, TokenizedSplit


def _ort_quant():
    """onnxruntime.quantization imports in ~1 s: only when quantizing."""
    from onnxruntime import quantization as q

    return q


class CalibrationReader:
    """Feeds `n` real examples, padded to `seq_len` as in deployment, in batches."""

    def __init__(self, split: TokenizedSplit, n: int, seq_len: int, batch: int = 16, model: Path | None = None):
        """`model`: the ONNX file calibrated, whose inputs decide what is fed (DistilBERT takes no token types)."""
        if len(split) == 0:
            raise DataError("calibration data is empty; it needs real examples (quantize.calibration_examples > 0)")
        names = INPUTS if model is None else input_names(model)
        arrays = {k: v[:n, :seq_len] for k, v in split.arrays().items() if k in names}
        vocab_ok = arrays["input_ids"].min() >= 0
        if not vocab_ok or not set(np.unique(arrays["attention_mask"])) <= {0, 1}:
            raise DataError("calibration inputs are corrupt (negative ids or a mask other than 0/1); re-tokenize them")
        self.n = len(arrays["input_ids"])
        self.batches = [
            {k: np.ascontiguousarray(v[s : s + batch]) for k, v in arrays.items()} for s in range(0, self.n, batch)
        ]
        self._it = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])


# -- graph helpers ------------------------------------------------------------


def input_names(path: Path) -> tuple[str, ...]:
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return tuple(i.name for i in graph.input if i.name not in inits)


def embedding_gathers(model: onnx.ModelProto, min_elements: int = 65536) -> list[onnx.NodeProto]:
    """Gather nodes that look up rows of a large float initializer (word / position tables)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits:
            t = inits[node.input[0]]
            if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and t.dims[0] * t.dims[1] >= min_elements:
                out.append(node)
    return out


INT4_BLOCKS = (32, 16)  # values per scale, first that divides the width (ORT: a power of two >= 16)


def int4_blocks(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
    """A [rows, width] float table as GatherBlockQuantized takes it: uint8 with two 4-bit values per
    byte (low nibble first, stored +8: ORT's default zero point for uint8 data) and one fp16 scale per
    block of a row: max|value| / 7, values rounded to [-7, 7]. That is edgepipe.model.int4's grid (the
    TFLite table's too), so a table recovery left on it is stored exactly. None when no block size
    divides the width."""
    rows, width = table.shape
    block = next((b for b in INT4_BLOCKS if width % b == 0), None)
    if block is None:
        return None
    blocks = table.astype(np.float32).reshape(rows, width // block, block)
    scale = (np.abs(blocks).max(-1) / 7.0).astype(np.float16).astype(np.float32)
    scale[scale == 0] = 1.0
    q = (np.clip(np.round(blocks / scale[..., None]), -8, 7) + 8).astype(np.uint8).reshape(rows, width)
    return (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8), scale.astype(np.float16), block


def quantize_embeddings(model: onnx.ModelProto, bits: int = 8) -> int:
    """Tables become int8 with one scale per row (`bits=8`), or 4-bit blocks (`bits=4`; a table whose
    width no block size divides stays int8); lookups gather quantized rows, then scale them."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    count = 0
    for node in embedding_gathers(model):
        table = numpy_helper.to_array(inits[node.input[0]])
        base, ids, out = node.input[0], node.input[1], node.output[0]
        packed = int4_blocks(table) if bits == 4 else None
        model.graph.initializer.remove(inits[base])
        if packed is not None:
            data, scale, block = packed
            model.graph.initializer.extend(
                [numpy_helper.from_array(data, f"{base}_int4"), numpy_helper.from_array(scale, f"{base}_block_scale")]
            )
            new = [
                helper.make_node(
                    "GatherBlockQuantized",
                    [f"{base}_int4", ids, f"{base}_block_scale"],
                    [f"{out}_h"],
                    name=f"{node.name}_int4",
                    domain="com.microsoft",
                    gather_axis=0,
                    quantize_axis=1,
                    block_size=block,
                    bits=4,
                ),
                helper.make_node("Cast", [f"{out}_h"], [out], name=f"{node.name}_cast", to=onnx.TensorProto.FLOAT),
            ]
        else:
            scale = np.abs(table).max(axis=1) / 127.0
            scale[scale == 0] = 1.0
            q = np.clip(np.round(table / scale[:, None]), -127, 127).astype(np.int8)
            axes = f"{base}_unsqueeze_axes"
            model.graph.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{base}_int8"),
                    numpy_helper.from_array(scale.astype(np.float32), f"{base}_row_scale"),
                    numpy_helper.from_array(np.array([-1], dtype=np.int64), axes),
                ]
            )
            new = [
                helper.make_node("Gather", [f"{base}_int8", ids], [f"{out}_q"], name=f"{node.name}_int8", axis=0),
                helper.make_node("Gather", [f"{base}_row_scale", ids], [f"{out}_s"], name=f"{node.name}_scale", axis=0),
                helper.make_node(
                    "Cast", [f"{out}_q"], [f"{out}_f"], name=f"{node.name}_cast", to=onnx.TensorProto.FLOAT
                ),
                helper.make_node("Unsqueeze", [f"{out}_s", axes], [f"{out}_s2"], name=f"{node.name}_unsq"),
                helper.make_node("Mul", [f"{out}_f", f"{out}_s2"], [out], name=f"{node.name}_dequant"),
            ]
        i = nodes.index(node)
        nodes[i : i + 1] = new
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if count and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return count


EMBEDDING_BITS = {"int4": 4, "int8": 8, "fp32": None}


def embedding_tables(model: onnx.ModelProto, embedding: str) -> dict[str, Any]:
    """Quantize the model's embedding tables as `quantize.embedding` says; what was done."""
    bits = EMBEDDING_BITS[embedding]
    n = quantize_embeddings(model, bits) if bits else 0
    int4 = sum(1 for node in model.graph.node if node.op_type == "GatherBlockQuantized")
    return {"int8_embeddings": n, "embedding_bits": bits if n else None, "int4_embeddings": int4}


def node_groups(model: onnx.ModelProto, scope_prefix: str = r"^model\.") -> dict[str, str]:
    """Node name -> the PyTorch module it came from (the dynamo exporter records name scopes),
    e.g. `layer.1.output.dense`, `layer.0.attention.self` (scores and context), `head`; the
    architecture's `scope_prefix` (its module path down to the layers) is stripped."""
    groups = {}
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        module = None
        if scopes:
            try:
                parts = ast.literal_eval(scopes)
                module = parts[-2] if len(parts) >= 2 else None
            except (ValueError, SyntaxError):
                module = None
        groups[node.name] = re.sub(scope_prefix, "", module) if module else node.name
    return groups


def op_types_of(qcfg: QuantizeConfig) -> list[str]:
    """`["all"]` (or unset, with no task to ask) means every op type ORT's static quantizer handles."""
    if qcfg.op_types not in (None, ["all"]):
        return list(qcfg.op_types)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def quantizable_nodes(model_path: Path, op_types: list[str]) -> list[str]:
    model = onnx.load(str(model_path), load_external_data=False)
    skip = {n.name for n in embedding_gathers(model)}
    return [n.name for n in model.graph.node if n.op_type in op_types and n.name not in skip]


# -- quantization -------------------------------------------------------------


def preprocess(fp32: Path, out: Path) -> None:
    q = _ort_quant()
    try:
        with quiet_root_logger():
            q.shape_inference.quant_pre_process(str(fp32), str(out), auto_merge=True, skip_symbolic_shape=False)
    except Exception as e:
        raise ModelError(f"quantization pre-processing failed on {fp32.name} ({type(e).__name__}: {e})") from None


def static_int8(
    pre: Path,
    out: Path,
    reader: CalibrationReader,
    qcfg: QuantizeConfig,
    exclude: list[str],
    cache: Path,
) -> dict[str, Any]:
    q = _ort_quant()
    method = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }[qcfg.method]
    act = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}[qcfg.activation_type]
    model = onnx.load(str(pre))
    gathers = [n.name for n in embedding_gathers(model)]
    op_types = op_types_of(qcfg)
    fmt = q.QuantFormat.QDQ if qcfg.format == "qdq" else q.QuantFormat.QOperator
    reader.rewind()
    with tempfile.TemporaryDirectory(prefix="edgepipe-q-") as tmp, quiet_root_logger():
        raw = Path(tmp) / "q.onnx"
        q.quantize_static(
            str(pre),
            str(raw),
            reader,
            quant_format=fmt,
            op_types_to_quantize=op_types,
            per_channel=qcfg.per_channel,
            activation_type=act,
            weight_type=q.QuantType.QInt8,
            nodes_to_exclude=gathers + list(exclude),
            calibrate_method=method,
            extra_options={
                "ActivationSymmetric": qcfg.activation_type == "int8",
                "WeightSymmetric": True,
                "CalibPercentile": 99.999,
            },
            calibration_cache_path=str(cache),
        )
        qmodel = onnx.load(str(raw))
    tables = embedding_tables(qmodel, qcfg.embedding)
    with atomic_path(out) as tmp_out:
        onnx.save(qmodel, str(tmp_out))
    n_q = sum(1 for n in qmodel.graph.node if n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear"))
    return {"quantize_linear_nodes": n_q, **tables}


def dynamic_int8(pre: Path, out: Path, qcfg: QuantizeConfig) -> dict[str, Any]:
    q = _ort_quant()
    with tempfile.TemporaryDirectory(prefix="edgepipe-q-") as tmp, quiet_root_logger():
        raw = Path(tmp) / "q.onnx"
        q.quantize_dynamic(
            str(pre),
            str(raw),
            per_channel=qcfg.per_channel,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
        qmodel = onnx.load(str(raw))
    tables = embedding_tables(qmodel, qcfg.embedding)
    with atomic_path(out) as tmp_out:
        onnx.save(qmodel, str(tmp_out))
    return tables


def quantize(
    fp32: Path,
    out: Path,
    calibration: TokenizedSplit,
    val: TokenizedSplit,
    qcfg: QuantizeConfig,
    seq_len: int,
    progress: Progress = Silent(),
    task: Task | None = None,
    scope_prefix: str = r"^model\.",
) -> dict[str, Any]:
    """fp32 ONNX -> int8 ONNX at `out`; returns what was done and what it cost on `val` in the task's metric."""
    task = task or tasks.get(None)
    qcfg = asked = qcfg.model_copy(update={"op_types": task_op_types(qcfg, task)})
    reader = CalibrationReader(calibration, qcfg.calibration_examples, seq_len, model=fp32)
    work = Path(tempfile.mkdtemp(prefix="edgepipe-quant-"))
    try:
        pre, cache = work / "pre.onnx", work / "calibration.json"
        fusion: dict[str, Any] = {"used": False, "why": "quantize.fuse_attention is off"}
        graph = fp32
        if qcfg.fuse_attention:
            graph, fusion = fused_attention(fp32, work / "fused.onnx", val.head(64))
        preprocess(graph, pre)
        fp32_val = OrtModel(fp32).predict(val)
        base = task.score(fp32_val, val.labels)
        tries: list[Attempt] = []

        def scored(path: Path, info: dict, excluded: list[str], how: str) -> Attempt:
            outputs = OrtModel(path).predict(val)
            tries.append(
                Attempt(path, task.score(outputs, val.labels), task.agreement(outputs, fp32_val), info, excluded, how)
            )
            return tries[-1]

        def attempt(exclude: list[str]) -> Attempt:
            path = work / f"try{len(tries)}.onnx"
            return scored(path, static_int8(pre, path, reader, qcfg, exclude, cache), list(exclude), "static")

        def within(a: Attempt) -> bool:
            return qcfg.within_budget((base - a.metric) * 100, a.agreement)

        dynamic_tables: set[str] = set()

        def dynamic(embedding: str, how: str) -> Attempt:
            dynamic_tables.add(embedding)
            path = work / f"dynamic-{embedding}.onnx"
            dyn_cfg = qcfg.model_copy(update={"embedding": embedding})
            return scored(path, dynamic_int8(pre, path, dyn_cfg), [], how)

        m = task.metric
        if task.int8_activations == "dynamic":  # the task's int8 (embeddings): static only if this misses
            best = dynamic(asked.embedding, "dynamic (the task's int8)")
        if task.int8_activations != "dynamic" or not within(best):
            best = attempt([])
        report: dict[str, Any] = {
            f"fp32_val_{m}": base,
            f"first_try_val_{m}": tries[0].metric,
            "first_try_val_agreement": tries[0].agreement,
        }
        if not within(best) and best.info.get("int4_embeddings"):
            # the 4-bit table is the cheapest thing to give back: int8 rows before any layer goes fp32
            qcfg = qcfg.model_copy(update={"embedding": "int8"})
            best = attempt([])
            report["embedding_fallback"] = "int8 (4-bit tables missed the budget)"
            progress.log(f"  int8 budget: embedding tables int8 -> val drop {(base - best.metric) * 100:.2f} points")
        if not within(best) and qcfg.max_excluded_groups > 0:
            ranking = sensitivity(graph, pre, work, reader, qcfg, cache, val, fp32_val, progress, scope_prefix)
            report["sensitivity"] = [{"group": g, "logit_mse": e} for g, e, _ in ranking]
            report["excluded_groups"] = []
            excluded: list[str] = []
            for group, _, nodes in ranking[: qcfg.max_excluded_groups]:
                excluded += nodes
                report["excluded_groups"].append(group)
                best = attempt(excluded)
                progress.log(
                    f"  int8 budget: {group} kept fp32 -> val drop {(base - best.metric) * 100:.2f} points, "
                    f"agreement {best.agreement:.3f}"
                )
                if within(best):
                    break
        # MatMuls only: ORT's dynamic quantizer has no Gemm (its IntegerOpsRegistry)
        matmuls = set(quantizable_nodes(pre, ["MatMul"])) if best.excluded else set()
        kept_float = [n for n in best.excluded if n in matmuls]
        if within(best) and kept_float:
            # The MatMuls kept out of static int8 still take int8 weights with a scale per call for
            # their input (dynamic): their inputs' outliers (post-GELU FFN activations) are what a
            # calibrated per-tensor scale cannot hold, the weights are not.
            path = work / f"try{len(tries)}.onnx"
            mixed = scored(path, {**best.info, **mixed_dynamic(best.path, path, kept_float)}, best.excluded, "static")
            if within(mixed):
                best = mixed
                progress.log(f"  int8 budget: the {len(kept_float)} MatMuls kept out of static int8 take dynamic int8")
        if not within(best):
            # the 4-bit table again first if static gave it up: dynamic activations may leave room for it
            tables = [asked.embedding] + ([qcfg.embedding] if qcfg.embedding != asked.embedding else [])
            for embedding in [t for t in tables if t not in dynamic_tables]:
                dyn = dynamic(embedding, "dynamic (static int8 missed the budget)")
                report[f"dynamic_val_{m}"], report["dynamic_val_agreement"] = dyn.metric, dyn.agreement
                if within(dyn):
                    break
            # a dynamic try within budget, else the closest (the manifest says none met the budget)
            best = max(tries, key=lambda a: (within(a), a.metric, a.agreement))
        with atomic_path(out) as tmp_out:
            shutil.copyfile(best.path, tmp_out)
        acc, agree, info, excluded = best.metric, best.agreement, best.info, best.excluded
        report["mode"] = best.how
        report["tries"] = [t.record(m, best) for t in tries]
        if not within(best):
            report["shipped"] = "the closest try: none met the budget"
        quantizable = quantizable_nodes(pre, ["MatMul", "Gemm"])
        report.update(
            info,
            quantized_matmuls=len([n for n in quantizable if n not in excluded])
            if report["mode"] == "static" and not info.get("dynamic_matmuls")
            else len(quantizable),
            excluded_node_count=len(excluded),
            **{f"val_{m}": acc},
            val_agreement=agree,
            val_drop_points=round((base - acc) * 100, 4),
            budget_points=qcfg.max_accuracy_drop,
            budget_min_agreement=qcfg.min_agreement,
            budget_met=within(best),
            excluded_nodes=excluded,
            calibration_examples=reader.n,
            calibration_method=qcfg.method,
            activation_type=qcfg.activation_type,
            per_channel=qcfg.per_channel,
            format=qcfg.format,
            op_types=qcfg.op_types,
            attention_fusion=fusion,
        )
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Attempt:
    """One int8 model the budget loop built, and what it scored on validation."""

    path: Path
    metric: float
    agreement: float
    info: dict[str, Any]
    excluded: list[str]
    how: str

    def record(self, metric_name: str, shipped: Attempt) -> dict[str, Any]:
        return {
            "how": self.how,
            f"val_{metric_name}": self.metric,
            "val_agreement": self.agreement,
            "fp32_nodes": len(self.excluded) - self.info.get("dynamic_matmuls", 0),
            "dynamic_matmuls": self.info.get("dynamic_matmuls", 0),
            "embedding_bits": self.info.get("embedding_bits"),
            "shipped": self is shipped,
        }


def task_op_types(qcfg: QuantizeConfig, task: Task) -> list[str]:
    """`quantize.op_types`, or the task's when unset (Task.int8_op_types)."""
    if qcfg.op_types is not None:
        return list(qcfg.op_types)
    chosen = list(task.int8_op_types)
    if chosen == ["all"] and qcfg.method == "entropy":
        return ["MatMul", "Gemm"]  # entropy calibration fails on all ops (config.QuantizeConfig says why)
    return chosen


def mixed_dynamic(static: Path, out: Path, nodes: list[str]) -> dict[str, Any]:
    """`static` with `nodes` (fp32 MatMuls) as dynamic int8: int8 weights, input scale per call."""
    q = _ort_quant()
    with quiet_root_logger():
        q.quantize_dynamic(
            str(static),
            str(out),
            per_channel=True,
            weight_type=q.QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
        )
    return {"dynamic_matmuls": len(nodes)}


def sensitivity(
    fp32: Path,
    pre: Path,
    work: Path,
    reader: CalibrationReader,
    qcfg: QuantizeConfig,
    cache: Path,
    val: TokenizedSplit,
    fp32_val: np.ndarray,
    progress: Progress,
    scope_prefix: str = r"^model\.",
) -> list[tuple[str, float, list[str]]]:
    """Quantize one node group at a time (the rest fp32); rank groups by output MSE vs fp32."""
    names = quantizable_nodes(pre, op_types_of(qcfg))
    scope = node_groups(onnx.load(str(fp32), load_external_data=False), scope_prefix)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(scope.get(n, n), []).append(n)
    probe = work / "probe.onnx"
    sub = val.head(256)
    ref = fp32_val[:256]
    ranking = []
    for group in progress.track(list(groups), len(groups), "int8 sensitivity"):
        others = [n for n in names if n not in groups[group]]
        static_int8(pre, probe, reader, qcfg, others, cache)
        err = float(((OrtModel(probe).predict(sub) - ref) ** 2).mean())
        ranking.append((group, err, groups[group]))
    return sorted(ranking, key=lambda r: -r[1])


def run(
    ctx: Stages,
    *,
    role: str,
    fp32: Artifact,
    data: TokenizedData,
    qcfg: QuantizeConfig,
    seq_len: int,
    task: Task,
    arch: Architecture,
) -> Result:
    """The stage: the role's fp32 ONNX as int8 (budget checked on val), then compared with it on test."""
    source, path = ctx.path(fp32.path), ctx.path(f"onnx/{role}.int8.onnx")
    report = quantize(source, path, data.train, data.val, qcfg, seq_len, ctx.progress, task, arch.scope_prefix)
    report |= task.compare(OrtModel(path).predict(data.test), OrtModel(source).predict(data.test), data.test.labels)
    report["size_ratio_vs_fp32"] = round(fp32.bytes / path.stat().st_size, 3)
    return report, [path]
