"""ONNX Runtime graph fusions before int8: onnxscript's rewriter (the dynamo exporter's own), one family
at a time, checked against the unfused graph before it is used.

Why attention only, by default (`quantize.fuse_attention`), measured on the default model with
`python -m bench.quant_variants runs/demo --fusions` (1 thread, seq 64, batch 1, interleaved rounds):
the three layers' attention (MatMul, scale, mask Add, Softmax, MatMul, with their Reshapes and
Transposes) become one `com.microsoft.MultiHeadAttention` each; static int8 then quantizes the Q/K/V
and output projections and leaves attention's inner products to the fused fp32 kernel, instead of
QLinear ops with a quantize/dequantize pair around each: 406 -> 303 int8 nodes and int8 p50 0.62x ->
0.52x of fp32 at the same test accuracy (79.95 % vs 80.00 %). On the fp32 graph the same fusion
measured 0.97-1.10x of the unfused time in three runs (no consistent gain), so fp32 artifacts stay
unfused. SkipLayerNormalization and (Bias)Gelu fusions gave int8 0.67x and 0.61x (no gain over 0.62x),
and everything fused 0.58x: not used.

ONNX Runtime's own `optimizer.optimize_model(model_type="bert")` fuses no attention on these dynamo
graphs (FINDINGS). The int8 files already need ONNX Runtime (GatherBlockQuantized, a contrib op),
so a contrib attention op narrows no one's choice of runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.tokenized import TokenizedSplit

FAMILIES = ("attention", "layernorm", "gelu", "all")
ATOL = 1e-4  # fused vs unfused fp32 logits; the default model measured 1.3e-6 with everything fused


def fuse_graph(fp32: Path, out: Path, family: str) -> dict[str, int]:
    """`fp32` with one family of onnxscript's ORT fusions (`all`: its `optimize_for_ort`) written to
    `out`; returns how many of each fusion it made."""
    import onnx_ir as ir
    from onnx_ir.passes import common as common_passes
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter.ort_fusions import erfgelu, gelu, mha, optimize_for_ort, sdpa, shape_optimization
    from onnxscript.rewriter.ort_fusions.bias_gelu import fuse_bias_gelu
    from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias
    from onnxscript.rewriter.ort_fusions.mha_scale import fuse_mha_scale
    from onnxscript.rewriter.ort_fusions.skip_normalization import fuse_skip_layer_normalization

    if family not in FAMILIES:
        raise ValueError(f"unknown fusion family {family!r}; one of {', '.join(FAMILIES)}")
    model = ir.load(str(fp32))
    if family == "all":
        model, counts = optimize_for_ort(model)
    else:  # optimize_for_ort's own preparation (onnxscript.rewriter.ort_fusions._core), then one family in its order
        common_passes.ShapeInferencePass()(model)
        optimize(model)
        shape_optimization.rules.apply_to_model(model)
        optimize(model)
        steps = {
            "layernorm": [("skip_layer_normalization", fuse_skip_layer_normalization, {})],
            "gelu": [
                ("erf_gelu", erfgelu.fuse_erfgelu, {}),
                ("gelu", gelu.fuse_gelu, {}),
                ("bias_gelu", fuse_bias_gelu, {}),
            ],
            "attention": [
                ("sdpa", sdpa.fuse_sdpa, {"apply_shape_inference": True}),
                ("mha1", mha.fuse_mha1, {}),
                ("mha2", mha.fuse_mha2, {}),
                ("mha_scale", fuse_mha_scale, {}),
                ("mha_bias", fuse_mha_bias, {}),
            ],
        }[family]
        counts = {name: fn(model, **kw) for name, fn, kw in steps}
        optimize(model)  # inlines the fusion functions nothing consumed
    ir.save(model, str(out))
    return {k: v for k, v in counts.items() if v}


def fused_attention(fp32: Path, out: Path, check: TokenizedSplit) -> tuple[Path, dict[str, Any]]:
    """The graph to quantize and what happened: `out` with attention fused if the rewriter found any
    and its logits on `check` match `fp32`'s within ATOL; else `fp32` itself, with the reason. A model
    the rewriter does not recognise (another attention layout, another mask) is quantized unfused."""
    try:
        counts = fuse_graph(fp32, out, "attention")
    except Exception as e:  # an optimisation: the unfused graph is always a correct answer
        return fp32, {"used": False, "why": f"onnxscript's rewriter failed ({type(e).__name__}: {str(e)[:160]})"}
    fused = counts.get("mha1", 0) + counts.get("mha2", 0)
    if not fused:
        return fp32, {"used": False, "why": "no attention matched onnxscript's patterns", "fusions": counts}
    diff = float(np.abs(OrtModel(out).predict(check) - OrtModel(fp32).predict(check)).max())
    record = {"fusions": counts, "attention_ops": fused, "max_abs_vs_unfused": diff}
    if not diff <= ATOL:
        return fp32, {"used": False, "why": f"fused logits differ by {diff:.2g} > {ATOL}"} | record
    return out, {"used": True} | record
