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

Shapes are static and inputs are int32, as the TFLite Task Library's BERT classifier expects.
The default signature (subgraph 0, what the Task Library and MediaPipe run) takes `[1, seq_len]`;
each `export.tflite_buckets` length N adds a signature `seq_N` taking `[1, N]` in the same file,
sharing its weights, so an app pads a text to the smallest signature that holds it (the runner and
app_check.py do the same). At int8 each signature is calibrated on the training texts that fit it.
"""

from __future__ import annotations

import copy
import re
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


DEFAULT_SIGNATURE = "serving_default"  # litert-torch's name for a one-signature model; subgraph 0
BUCKET_PREFIX = "seq_"  # seq_N: a signature taking [1, N]; the runner and app_check.py pick them by this name


def signature_lengths(seq_len: int, buckets: list[int]) -> list[tuple[str, int]]:
    """(signature name, length): the default first, so it becomes subgraph 0."""
    return [(DEFAULT_SIGNATURE, seq_len)] + [(f"{BUCKET_PREFIX}{n}", n) for n in sorted(set(buckets)) if n < seq_len]


def fitting_rows(split: TokenizedSplit, length: int, limit: int) -> np.ndarray:
    """Indices of the first `limit` rows whose real tokens fit `length` (cut to it, they lose only padding)."""
    return np.flatnonzero(split.attention_mask.sum(axis=1) <= length)[:limit]


def _convert(litert_torch, signatures: list[tuple[str, torch.nn.Module, tuple]], **kwargs):
    """One flatbuffer with a signature per (name, module, example args), the first as subgraph 0.
    litert-torch stores each weight once: three signatures of the default fp32 model took 22.50 MB
    against 22.18 MB for one (measured)."""
    converter = None
    for name, module, args in signatures:
        converter = (converter or litert_torch).signature(name, module, args)
    with _quiet():
        return converter.convert(**kwargs)


_quiet = quiet_output  # litert-torch prints per-pass progress to stdout/stderr; keep the CLI's output readable


def _signature_module(model: TaskModel) -> torch.nn.Module:
    m = copy.deepcopy(model).eval()
    m.set_attention("eager")
    return _Int32Signature(m).eval()


def export_tflite_fp32(
    model: TaskModel, path: Path, example: TokenizedSplit, seq_len: int, buckets: list[int] = ()
) -> list[str]:
    """Returns the signature names written."""
    litert_torch = require_litert_torch()
    module = _signature_module(model)
    names = signature_lengths(seq_len, list(buckets))
    edge = _convert(litert_torch, [(name, module, _rows(model, example, 0, n)) for name, n in names])
    with tempfile.TemporaryDirectory(prefix="edgepipe-tfl-") as tmp:
        raw = Path(tmp) / "fp32.tflite"
        edge.export(str(raw))
        inline_buffers(raw, path)
    return [name for name, _ in names]


def export_tflite_int8(
    model: TaskModel,
    path: Path,
    calibration: TokenizedSplit,
    seq_len: int,
    n_calibration: int,
    embedding: str = "int8",
    accept_table: Callable[[Path], bool] | None = None,
    buckets: list[int] = (),
) -> dict[str, Any]:
    """PT2E static int8, then the word table as `embedding` asks; a 4-bit table that `accept_table`
    (the int8 budget) refuses is written again as int8 rows from the same PT2E model."""
    litert_torch = require_litert_torch()
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    module = _signature_module(model)
    quantizer = float_only(pq.PT2EQuantizer)().set_global(
        pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    signatures, calibrated, skipped = [], {}, []
    for name, length in signature_lengths(seq_len, list(buckets)):
        rows = fitting_rows(calibration, length, n_calibration) if name != DEFAULT_SIGNATURE else None
        if rows is not None and len(rows) == 0:
            skipped.append(length)  # no training text is this short: an app would never pick it
            continue
        rows = np.arange(min(n_calibration, len(calibration))) if rows is None else rows
        example = _rows(model, calibration, int(rows[0]), length)
        with _quiet(), torch.no_grad():  # PT2E graphs are shape-specialised: one per signature
            prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, example).module(), quantizer)
            for i in rows:
                prepared(*_rows(model, calibration, int(i), length))
            converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        signatures.append((name, converted, example))
        calibrated[name] = len(rows)
    edge = _convert(litert_torch, signatures, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    n = calibrated[DEFAULT_SIGNATURE]
    with tempfile.TemporaryDirectory(prefix="edgepipe-tfl-") as tmp:
        pt2e = Path(tmp) / "pt2e.tflite"
        edge.export(str(pt2e))
        bits = quantize_embedding_lookup(pt2e, path, embedding, model.dims.hidden)
        refused = bits == 4 and accept_table is not None and not accept_table(path)
        if refused:
            bits = quantize_embedding_lookup(pt2e, path, "int8", model.dims.hidden)
    return {
        "calibration_examples": n,
        "signatures": [name for name, *_ in signatures],
        "calibration_examples_by_signature": calibrated,
        **({"buckets_skipped": f"no training text fits {skipped} tokens"} if skipped else {}),
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


_MODULE_PATH = re.compile(rb"(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


def shorten_tensor_names(model) -> int:
    """On a flatbuffer ModelT, in place: drop the Python module paths from inner tensor names
    (`transformers.models.bert.modeling_bert.BertLayer_2/...` -> `BertLayer_2/...`). litert-torch
    names each tensor by its full module path, up to 425 bytes: 90 KB of a 4.1 MB int8 model,
    paid again by every signature. Inputs and outputs keep their names (apps and the metadata
    writer look them up). Returns the bytes saved."""
    saved = 0
    for subgraph in model.subgraphs:
        keep = set(subgraph.inputs) | set(subgraph.outputs)
        for i, t in enumerate(subgraph.tensors):
            if i in keep or not t.name:
                continue
            short = _MODULE_PATH.sub(b"", bytes(t.name))
            saved += len(t.name) - len(short)
            t.name = short
    return saved


def inline_buffers(src: Path, dst: Path, float_outputs: bool = False) -> None:
    """ai-edge-quantizer appends weights after the flatbuffer (offset buffers); tools that
    rebuild the flatbuffer - the metadata writer among them - silently drop that tail.
    Rewrite with every buffer inside the flatbuffer (fine below 2 GB) and short tensor names;
    `float_outputs`: also dequantize int8 outputs inside the graph (see dequantize_outputs)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    shorten_tensor_names(model)
    if float_outputs:
        dequantize_outputs(model)
    with atomic_path(dst) as tmp:
        tmp.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def default_signature_only(src: Path, dst: Path) -> int:
    """`src` without its length signatures: subgraph 0 and the buffers it uses. MediaPipe's
    TextClassifier (and the Task Library) refuse a model with more than one subgraph ("Classification
    tflite models are assumed to have a single subgraph", MediaPipe 1.2.3), so the bundle they load
    is this one. Returns the bytes dropped."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    model.subgraphs = model.subgraphs[:1]
    model.signatureDefs = [sig for sig in model.signatureDefs or [] if sig.subgraphIndex == 0]
    used = {t.buffer for t in model.subgraphs[0].tensors} | {m.buffer for m in model.metadata or []}
    for i, buffer in enumerate(model.buffers):
        if i not in used:
            buffer.data = None  # the index stays (tensors refer to buffers by position), the bytes go
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)
    return src.stat().st_size - len(data)


def check_tflite_parity(
    model: TaskModel, path: Path, split: TokenizedSplit, seq_len: int, atol: float, n: int = 32
) -> dict[str, Any]:
    """fp32 TFLite vs PyTorch, max abs output difference on real examples: each padded to `seq_len`
    (the default signature) and each at its own length (the signature an app picks for it)."""
    module = _signature_module(model)
    tfl = LiteRTModel(path, threads=1)
    refs, gots, used = [], [], set()
    lengths = split.attention_mask.sum(axis=1)
    with torch.no_grad():
        for i in range(min(n, len(split))):
            for width in (seq_len, max(1, min(seq_len, int(lengths[i])))):
                rows = _rows(model, split, i, width)
                refs.append(module(*rows).numpy().ravel())
                gots.append(tfl.run(*(r.numpy() for r in rows)).ravel())
                used.add(tfl.signature_for(width))
    record = parity_record(
        np.concatenate(refs), np.concatenate(gots), atol, f"TFLite export {path.name}", "report a bug"
    )
    return record | {"parity_examples": min(n, len(split)), "parity_signatures": sorted(used)}


def run_fp32(
    ctx: Stages,
    *,
    role: str,
    model: TaskModel,
    data: TokenizedData,
    seq_len: int,
    buckets: list[int],
    parity_atol: float,
) -> Result:
    """The stage: `tflite/ROLE.fp32.tflite`, written only if it matches PyTorch."""
    path = ctx.path(f"tflite/{role}.fp32.tflite")
    signatures = export_tflite_fp32(model, path, data.test, seq_len, buckets)
    report = check_tflite_parity(model, path, data.test, seq_len, parity_atol)
    return report | {"seq_len": seq_len, "signatures": signatures}, [path]


def run_int8(
    ctx: Stages,
    *,
    role: str,
    model: TaskModel,
    data: TokenizedData,
    fp32: Artifact,
    seq_len: int,
    buckets: list[int],
    qcfg: QuantizeConfig,
) -> Result:
    """The stage: `tflite/ROLE.int8.tflite`, compared with the fp32 TFLite on the test split (each text
    through the signature an app picks for its length)."""
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
            model, path, data.train, seq_len, qcfg.calibration_examples, qcfg.embedding, within_budget, buckets
        )
    int8 = LiteRTModel(path)
    if "signatures" not in report:  # the dynamic recipe: the fp32 file quantized, its signatures kept
        report["signatures"] = list(int8.signatures)
    report |= {"seq_len": seq_len} | task.compare(
        int8.predict(data.test), LiteRTModel(source).predict(data.test), data.test.labels
    )
    report["size_ratio_vs_fp32"] = round(fp32.bytes / path.stat().st_size, 3)
    return report, [path]
