"""TFLite writer: litert-torch conversion, fp32 and int8. Reads `export.seq_len`,
`export.parity_atol` and `quantize:` (calibration examples, embedding bits, the int8 budget).

int8 is two tools, each doing what it does well: litert-torch's PT2E static quantizer
(per-channel int8 weights, int8 activations calibrated on real training examples),
which leaves the embedding table fp32 (most of a small model's bytes); then
ai-edge-quantizer turns the EMBEDDING_LOOKUP table into int8 rows (or 4-bit blocks of 32), native
TFLite kernels, so no float copy of the table exists at run time. Per-row int4 lost 4 points on the
default model (77.65 % vs 81.7 %); blocks of 32 lost none (81.75 %, 6.0 MB instead of 8.8 MB), but
like the ONNX side, a 4-bit table that misses the int8 budget on validation is written again as
int8 rows (the bundle's metadata keeps block scales: export/tflite_metadata.py `graft`).

A task whose whole output vector matters (embeddings: `Task.int8_activations == "dynamic"`)
takes ai-edge-quantizer's dynamic recipe on the fp32 TFLite instead (`export_tflite_dynamic_int8`).

Shapes are static, `[1, seq_len]`, and inputs are int32, as the TFLite Task Library's
BERT classifier expects; the app pads to `seq_len` (the runner does the same).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepipe.config import QuantizeConfig
from edgepipe.errors import ModelError, require_installed
from edgepipe.export.parity import parity_record
from edgepipe.export.pt2e import float_only
from edgepipe.manifest import Artifact
from edgepipe.model.task_model import TaskModel
from edgepipe.quiet import litert_environment, quiet_output
from edgepipe.rundir import atomic_path
from edgepipe.runtimes.litert import LiteRTModel
from edgepipe.stages import Result, Stages
from edgepipe.tokenized import TokenizedData, TokenizedSplit

INSTALL = "pip install 'litert-torch==0.10.0' 'ai-edge-litert==2.3.0' 'ai-edge-quantizer==0.10.0' (or: make demo)"


def require_litert_torch(import_it: bool = True):
    """`import_it=False` only checks that it is installed (importing it costs seconds and log noise)."""
    missing = ModelError(
        f"TFLite export needs litert-torch, which is not installed; {INSTALL}, or --set export.tflite=false"
    )
    require_installed("litert_torch", missing)
    if not import_it:
        return None
    litert_environment()  # library callers too: before the converter's bundled TensorFlow loads
    try:
        import litert_torch
    except ImportError:
        raise missing from None
    return litert_torch


class _Int32Signature(torch.nn.Module):
    """The architecture's inputs as int32 (as the Task Library feeds them) -> the task's outputs."""

    def __init__(self, model: TaskModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(
            input_ids.long(), attention_mask.long(), None if token_type_ids is None else token_type_ids.long()
        )


def _rows(model: TaskModel, split: TokenizedSplit, i: int, seq_len: int) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.from_numpy(np.ascontiguousarray(getattr(split, n)[i : i + 1, :seq_len]).astype(np.int32))
        for n in model.input_names
    )


_quiet = quiet_output  # litert-torch prints per-pass progress to stdout/stderr; keep the CLI's output readable


def _signature_module(model: TaskModel) -> torch.nn.Module:
    m = copy.deepcopy(model).eval()
    m.set_attention("eager")
    return _Int32Signature(m).eval()


def export_tflite_fp32(model: TaskModel, path: Path, example: TokenizedSplit, seq_len: int) -> None:
    litert_torch = require_litert_torch()
    module = _signature_module(model)
    with _quiet():
        edge = litert_torch.convert(module, _rows(model, example, 0, seq_len))
    with atomic_path(path) as tmp:
        edge.export(str(tmp))


def export_tflite_int8(
    model: TaskModel,
    path: Path,
    calibration: TokenizedSplit,
    seq_len: int,
    n_calibration: int,
    embedding: str = "int8",
    accept_table: Callable[[Path], bool] | None = None,
) -> dict[str, Any]:
    """PT2E static int8, then the word table as `embedding` asks; a 4-bit table that `accept_table`
    (the int8 budget) refuses is written again as int8 rows from the same PT2E model."""
    litert_torch = require_litert_torch()
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    module = _signature_module(model)
    args = _rows(model, calibration, 0, seq_len)
    n = min(n_calibration, len(calibration))
    with _quiet(), torch.no_grad():
        exported = torch.export.export(module, args).module()
        quantizer = float_only(pq.PT2EQuantizer)().set_global(
            pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
        )
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        for i in range(n):
            prepared(*_rows(model, calibration, i, seq_len))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        edge = litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    with tempfile.TemporaryDirectory(prefix="edgepipe-tfl-") as tmp:
        pt2e = Path(tmp) / "pt2e.tflite"
        edge.export(str(pt2e))
        bits = quantize_embedding_lookup(pt2e, path, embedding, model.dims.hidden)
        refused = bits == 4 and accept_table is not None and not accept_table(path)
        if refused:
            bits = quantize_embedding_lookup(pt2e, path, "int8", model.dims.hidden)
    return {
        "calibration_examples": n,
        "quantizer": "litert-torch PT2E (static, per-channel weights, int8 activations)",
        "int8_embedding": bits is not None,
        "embedding_bits": bits,
        **({"int4_table": "missed the int8 budget on validation: int8 rows"} if refused else {}),
    }


def export_tflite_dynamic_int8(fp32: Path, path: Path) -> dict[str, Any]:
    """ai-edge-quantizer's `dynamic_wi8_afp32` on the fp32 TFLite: per-channel int8 weights (the
    word table included), activations quantized per call by LiteRT's hybrid kernels. For tasks
    whose whole output vector matters (Task.int8_activations == "dynamic"): all-MiniLM-L6-v2's
    embeddings kept a mean cosine of 0.9975 to the teacher (top-10 overlap 0.923 over 1,000 test
    texts) against 0.945 / 0.601 with the static PT2E route. litert-torch's own dynamic PT2E
    configuration is no alternative: it gives EMBEDDING_LOOKUP a non-zero zero point, which
    LiteRT refuses to load (embedding_lookup.cc:73)."""
    try:
        from ai_edge_quantizer import quantizer as aeq
        from ai_edge_quantizer import recipe
    except ImportError:
        raise ModelError(f"dynamic int8 TFLite needs ai-edge-quantizer; {INSTALL}") from None
    q = aeq.Quantizer(str(fp32))
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    _write_quantized(q, path)
    return {
        "quantizer": "ai-edge-quantizer dynamic_wi8_afp32 (per-channel int8 weights, activations quantized per call)",
        "int8_embedding": True,
        "embedding_bits": 8,
    }


INT4_BLOCK = 32


def quantize_embedding_lookup(src: Path, dst: Path, embedding: str, width: int) -> int | None:
    """ai-edge-quantizer: EMBEDDING_LOOKUP tables to 4-bit blocks of 32 (`int4`; int8 rows when the
    width is not a multiple of 32) or int8 rows (`int8`); everything else untouched. `fp32` keeps the
    table float. Returns the bits the table got (None: float)."""
    bits = {"int4": 4 if width % INT4_BLOCK == 0 else 8, "int8": 8, "fp32": None}[embedding]
    if bits is None:
        inline_buffers(src, dst, float_outputs=True)
        return None
    try:
        from ai_edge_quantizer import qtyping
        from ai_edge_quantizer import quantizer as aeq
    except ImportError:
        raise ModelError(f"quantized TFLite embeddings need ai-edge-quantizer; {INSTALL}") from None
    granularity = qtyping.QuantGranularity.BLOCKWISE_32 if bits == 4 else qtyping.QuantGranularity.CHANNELWISE
    q = aeq.Quantizer(str(src))
    q.add_dynamic_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP,
        num_bits=bits,
        granularity=granularity,
    )
    _write_quantized(q, dst)
    return bits


def _write_quantized(q, dst: Path) -> None:
    """Run an ai-edge-quantizer `Quantizer` as configured and write its model to `dst` (buffers
    inlined, float outputs)."""
    with _quiet():
        result = q.quantize(enable_progress_report=False, enable_progress_bar=False)
    with tempfile.TemporaryDirectory(prefix="edgepipe-aeq-") as tmp:
        raw = Path(tmp) / "aeq.tflite"
        result.export_model(str(raw), overwrite=True)
        inline_buffers(raw, dst, float_outputs=True)


def dequantize_outputs(model) -> int:
    """On a flatbuffer ModelT, in place: each quantized (int8/uint8/int16) subgraph output gets a
    trailing DEQUANTIZE into a new float32 tensor that takes over the old tensor's name, its slot
    in subgraph.outputs and in every SignatureDef, so apps read float logits.

    PT2E quantizes the head's output, so litert-torch writes an int8 output tensor (scale ~0.02);
    apps following the Interpreter snippets read it as float[] and fail. The int8 math is
    unchanged; values equal (q - zero_point) * scale exactly (measured: max diff 0, +128 bytes,
    latency within noise, XNNPACK still runs the whole graph). Returns how many outputs changed."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    quantized = {fb.TensorType.INT8, fb.TensorType.UINT8, fb.TensorType.INT16}
    code = next(
        (
            i
            for i, oc in enumerate(model.operatorCodes)
            if flatbuffer_utils.get_builtin_code_from_operator_code(oc) == fb.BuiltinOperator.DEQUANTIZE
        ),
        None,
    )
    changed = 0
    for s, subgraph in enumerate(model.subgraphs):
        for k, old in enumerate(list(subgraph.outputs)):
            t = subgraph.tensors[old]
            q = t.quantization
            if t.type not in quantized or q is None or q.scale is None or len(q.scale) == 0:
                continue
            if code is None:
                oc = fb.OperatorCodeT()
                oc.builtinCode = oc.deprecatedBuiltinCode = fb.BuiltinOperator.DEQUANTIZE
                oc.version = 1
                model.operatorCodes.append(oc)
                code = len(model.operatorCodes) - 1
            if t.type != fb.TensorType.UINT8:  # DEQUANTIZE v2: int8 (and fp16) inputs
                model.operatorCodes[code].version = max(model.operatorCodes[code].version, 2)
            out = fb.TensorT()
            out.name, t.name = t.name, t.name + b"_quantized"
            out.type = fb.TensorType.FLOAT32
            out.shape, out.shapeSignature = t.shape, t.shapeSignature
            out.buffer = 0  # the empty sentinel buffer: an activation, no constant data
            subgraph.tensors.append(out)
            new = len(subgraph.tensors) - 1
            op = fb.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = code, [old], [new]
            subgraph.operators.append(op)  # operators run in list order: this one runs last
            subgraph.outputs[k] = new
            for sig in model.signatureDefs or []:
                if sig.subgraphIndex == s:
                    for item in sig.outputs:
                        if item.tensorIndex == old:
                            item.tensorIndex = new
            changed += 1
    return changed


def inline_buffers(src: Path, dst: Path, float_outputs: bool = False) -> None:
    """ai-edge-quantizer appends weights after the flatbuffer (offset buffers); tools that
    rebuild the flatbuffer - the metadata writer among them - silently drop that tail.
    Rewrite with every buffer inside the flatbuffer (fine below 2 GB); `float_outputs`: also
    dequantize int8 outputs inside the graph (see dequantize_outputs)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    if float_outputs:
        dequantize_outputs(model)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def check_tflite_parity(
    model: TaskModel, path: Path, split: TokenizedSplit, seq_len: int, atol: float, n: int = 32
) -> dict[str, Any]:
    """fp32 TFLite vs PyTorch, max abs output difference on real examples."""
    module = _signature_module(model)
    tfl = LiteRTModel(path, threads=1)
    refs, gots = [], []
    with torch.no_grad():
        for i in range(min(n, len(split))):
            rows = _rows(model, split, i, seq_len)
            refs.append(module(*rows).numpy())
            gots.append(tfl.run(*(r.numpy() for r in rows)))
    return parity_record(np.concatenate(refs), np.concatenate(gots), atol, f"TFLite export {path.name}", "report a bug")


def run_fp32(
    ctx: Stages, *, role: str, model: TaskModel, data: TokenizedData, seq_len: int, parity_atol: float
) -> Result:
    """The stage: `tflite/ROLE.fp32.tflite`, written only if it matches PyTorch."""
    path = ctx.path(f"tflite/{role}.fp32.tflite")
    export_tflite_fp32(model, path, data.test, seq_len)
    return check_tflite_parity(model, path, data.test, seq_len, parity_atol) | {"seq_len": seq_len}, [path]


def run_int8(
    ctx: Stages,
    *,
    role: str,
    model: TaskModel,
    data: TokenizedData,
    fp32: Artifact,
    seq_len: int,
    qcfg: QuantizeConfig,
) -> Result:
    """The stage: `tflite/ROLE.int8.tflite`, compared with the fp32 TFLite on the test split."""
    path, source = ctx.path(f"tflite/{role}.int8.tflite"), ctx.path(fp32.path)
    task = model.task
    if task.int8_activations == "dynamic":
        report = export_tflite_dynamic_int8(source, path)
    else:

        def within_budget(candidate: Path) -> bool:  # asked only about a 4-bit table
            reference, out = LiteRTModel(source).predict(data.val), LiteRTModel(candidate).predict(data.val)
            drop = (task.score(reference, data.val.labels) - task.score(out, data.val.labels)) * 100
            return qcfg.within_budget(drop, task.agreement(out, reference))

        report = export_tflite_int8(
            model, path, data.train, seq_len, qcfg.calibration_examples, qcfg.embedding, within_budget
        )
    report |= {"seq_len": seq_len} | task.compare(
        LiteRTModel(path).predict(data.test), LiteRTModel(source).predict(data.test), data.test.labels
    )
    report["size_ratio_vs_fp32"] = round(fp32.bytes / path.stat().st_size, 3)
    return report, [path]
