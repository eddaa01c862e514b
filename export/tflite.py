"""TFLite writer: litert-torch conversion, fp32 and int8.

int8 is two tools, each doing what it does well: litert-torch's PT2E static quantizer
(per-channel int8 weights, int8 activations calibrated on real training examples),
which leaves the embedding table fp32 (most of a small model's bytes); then
ai-edge-quantizer turns the EMBEDDING_LOOKUP table int8 (per-row scales, a native
TFLite kernel), so no float copy of the table exists at run time.

Shapes are static, `[1, seq_len]`, and inputs are int32, as the TFLite Task Library's
BERT classifier expects; the app pads to `seq_len` (the runner does the same).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepipe.errors import ExportParityError, ModelError
from edgepipe.modeling import INPUT_NAMES, Classifier
from edgepipe.pipeline.data import TokenizedSplit
from edgepipe.rundir import atomic_path

INSTALL = "pip install 'litert-torch==0.10.0' 'ai-edge-litert==2.3.0' 'ai-edge-quantizer==0.10.0' (or: make demo)"


def require_litert_torch(import_it: bool = True):
    """`import_it=False` only checks that it is installed (importing it costs seconds and log noise)."""
    import importlib.util

    missing = ModelError(f"TFLite export needs litert-torch, which is not installed; {INSTALL}, or --set export.tflite=false")
    try:
        if importlib.util.find_spec("litert_torch") is None:
            raise missing
    except (ImportError, ValueError):
        raise missing from None
    if not import_it:
        return None
    try:
        import litert_torch
    except ImportError:
        raise missing from None
    return litert_torch


class _Int32Signature(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) as int32 -> logits."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids.long(), attention_mask.long(), token_type_ids.long())


def _rows(split: TokenizedSplit, i: int, seq_len: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(getattr(split, n)[i : i + 1, :seq_len]).astype(np.int32)) for n in INPUT_NAMES)


@contextlib.contextmanager
def _quiet():
    """litert-torch prints per-pass progress to stdout/stderr; keep the CLI's output readable."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            yield
        finally:
            logging.getLogger().setLevel(level)


def _signature_module(model: Classifier) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model).eval()
    m.set_attention("eager")
    return _Int32Signature(m).eval()


def export_tflite_fp32(model: Classifier, path: Path, example: TokenizedSplit, seq_len: int) -> None:
    litert_torch = require_litert_torch()
    module = _signature_module(model)
    with _quiet():
        edge = litert_torch.convert(module, _rows(example, 0, seq_len))
    with atomic_path(path) as tmp:
        edge.export(str(tmp))


def export_tflite_int8(model: Classifier, path: Path, calibration: TokenizedSplit, seq_len: int, n_calibration: int) -> dict[str, Any]:
    litert_torch = require_litert_torch()
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    module = _signature_module(model)
    args = _rows(calibration, 0, seq_len)
    n = min(n_calibration, len(calibration))
    with _quiet(), torch.no_grad():
        exported = torch.export.export(module, args).module()
        quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        for i in range(n):
            prepared(*_rows(calibration, i, seq_len))
        converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
        edge = litert_torch.convert(converted, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    with tempfile.TemporaryDirectory(prefix="edgepipe-tfl-") as tmp:
        pt2e = Path(tmp) / "pt2e.tflite"
        edge.export(str(pt2e))
        embedding = int8_embedding_lookup(pt2e, path)
    return {"calibration_examples": n, "quantizer": "litert-torch PT2E (static, per-channel weights, int8 activations)", "int8_embedding": embedding}


def int8_embedding_lookup(src: Path, dst: Path) -> bool:
    """ai-edge-quantizer: EMBEDDING_LOOKUP tables to int8 (per-row); everything else untouched."""
    try:
        from ai_edge_quantizer import qtyping
        from ai_edge_quantizer import quantizer as aeq
    except ImportError:
        raise ModelError(f"int8 TFLite embeddings need ai-edge-quantizer; {INSTALL}") from None
    q = aeq.Quantizer(str(src))
    q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP, num_bits=8)
    with _quiet():
        result = q.quantize(enable_progress_report=False, enable_progress_bar=False)
    with tempfile.TemporaryDirectory(prefix="edgepipe-aeq-") as tmp:
        raw = Path(tmp) / "aeq.tflite"
        result.export_model(str(raw), overwrite=True)
        inline_buffers(raw, dst)
    return True


def inline_buffers(src: Path, dst: Path) -> None:
    """ai-edge-quantizer appends weights after the flatbuffer (offset buffers); tools that
    rebuild the flatbuffer - the metadata writer among them - silently drop that tail.
    Rewrite with every buffer inside the flatbuffer (fine below 2 GB)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    with atomic_path(dst) as tmp:
        tmp.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def check_tflite_parity(model: Classifier, path: Path, split: TokenizedSplit, seq_len: int, atol: float, n: int = 32) -> dict[str, Any]:
    """fp32 TFLite vs PyTorch, max abs logit difference on real examples."""
    from edgepipe.runtimes.litert import LiteRTModel

    module = _signature_module(model)
    tfl = LiteRTModel(path, threads=1)
    diff = 0.0
    with torch.no_grad():
        for i in range(min(n, len(split))):
            rows = _rows(split, i, seq_len)
            ref = module(*rows).numpy()
            got = tfl.run(*(r.numpy() for r in rows))
            diff = max(diff, float(np.abs(ref - got).max()))
    if not np.isfinite(diff) or diff > atol:
        raise ExportParityError(f"TFLite export {path.name} differs from PyTorch by {diff:.2e} (allowed {atol:.0e}); report a bug")
    return {"parity_max_abs": diff, "parity_examples": min(n, len(split))}
