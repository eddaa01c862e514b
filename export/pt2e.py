"""What the PT2E quantizers of two exporters (litert-torch's for TFLite, XNNPACK's for ExecuTorch) share."""

from __future__ import annotations

from typing import Any

import torch


def float_only(quantizer_class: type) -> type:
    """The PT2E quantizer, with annotations kept on float tensors only. It annotates every add and mul,
    integer index arithmetic too (DeBERTa's relative positions, `relative_pos + att_span`), and its
    observers cannot take int64: calibration failed with "histogram_cpu not implemented for 'Long'"
    (measured on the tiny DeBERTa-v3). Integers are indices here, never activations to quantize."""

    def is_float(node: Any) -> bool:
        val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
        return isinstance(val, torch.Tensor) and val.dtype.is_floating_point

    class FloatOnly(quantizer_class):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None:
                    continue
                annotation.input_qspec_map = {n: q for n, q in annotation.input_qspec_map.items() if is_float(n)}
                if not is_float(node):
                    annotation.output_qspec = None
            return model

    return FloatOnly
