"""ExecuTorch writer: `.pte` programs lowered to XNNPACK, fp32, int8 and 8da4w. Reads `export.seq_len`,
`export.parity_atol`, `export.executorch_variants` and `quantize:` (calibration examples, the int8 budget).

    torch.export (dynamic batch <= MAX_BATCH, sequence <= seq_len)
      -> fp32:  as is
      -> int8:  PT2E with XNNPACK's quantizer (static, per-channel int8 weights, int8 activations,
                calibrated on the same real training examples as the ONNX and TFLite int8 paths)
      -> 8da4w: torchao's int4 weights in groups of 32 with int8 dynamic activations, linear layers
    -> to_edge_transform_and_lower(XnnpackPartitioner) -> .pte

XNNPACK's quantizer leaves the word-embedding table float (most of a small model's bytes: 8.1 of
8.3 MB on the tiny test model), and torchao's embedding configs reach ExecuTorch only through a
pattern pass that does not match after PT2E (the table stays a tensor subclass: "Missing out
variants: torchao::dequantize_affine", measured with executorch 1.5.1). So the table is swapped for
`QuantizedWordEmbedding`, which calls ExecuTorch's own quantized embedding kernels
(`quantized_decomposed::embedding_byte` / `embedding_4bit`, int8 rows or 4-bit groups of 32) directly.

Operators XNNPACK does not take run on ExecuTorch's portable kernels: they are listed in the report
(`portable_ops`), never hidden. Like the other writers, fp32 is checked against PyTorch before it is
kept; int8 is checked against fp32 on validation under `quantize.max_accuracy_drop` and
`quantize.min_agreement`; when it misses, a 4-bit table goes back to int8 rows first, then the most
sensitive encoder layers (and the head) are kept out of the quantizer one by one, as the ONNX budget
loop keeps node groups fp32. When nothing meets the budget the closest try ships, `budget_met: false`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepipe.config import QuantizeConfig
from edgepipe.errors import ModelError, require_installed
from edgepipe.export.onnx import _Outputs
from edgepipe.export.parity import check_parity
from edgepipe.export.pt2e import float_only
from edgepipe.manifest import Artifact
from edgepipe.model.task_model import TaskModel
from edgepipe.progress import Progress, Silent
from edgepipe.quiet import native_stderr_captured, quiet_output
from edgepipe.rundir import atomic_path
from edgepipe.runtimes.executorch import ExecuTorchModel
from edgepipe.stages import Result, Stages
from edgepipe.tasks.base import Task
from edgepipe.tokenized import TokenizedData, TokenizedSplit

INSTALL = "pip install --no-deps 'executorch==1.5.1' 'ruamel.yaml==0.19.1' (or: make demo)"
VARIANTS = ("fp32", "int8", "8da4w")
MAX_BATCH = 64  # the programs take any batch up to this (the runner scores 32 rows at a time)
GROUP = 32  # 4-bit groups, for the 8da4w linears and the 4-bit embedding table alike
CALIBRATION_BATCH = 8


def require_executorch(import_it: bool = True) -> None:
    """`import_it=False` only checks that it is installed (the import costs seconds)."""
    missing = ModelError(
        f"ExecuTorch export needs executorch, which is not installed; {INSTALL}, or --set export.executorch=false"
    )
    require_installed("executorch", missing)
    if import_it:
        try:
            with quiet_output(), native_stderr_captured():
                import executorch.exir  # noqa: F401
        except ImportError as e:
            raise ModelError(f"executorch cannot be imported ({e}); {INSTALL}") from None


class QuantizedWordEmbedding(nn.Module):
    """A word-embedding table as int8 rows (one scale per row) or 4-bit values in groups of GROUP (one
    scale per group), symmetric, looked up by ExecuTorch's quantized embedding kernels, so no float
    copy of the table exists at run time. 4-bit packing is the kernel's: two values per byte, the even
    column in the high nibble, each stored +8."""

    def __init__(self, table: torch.Tensor, bits: int):
        super().__init__()
        import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  (registers the ops)

        w = table.detach().float()
        self.bits = bits
        if bits == 8:
            scale = (w.abs().amax(1) / 127).clamp_min(1e-12)
            q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        else:
            groups = w.reshape(w.shape[0], -1, GROUP)
            scale = (groups.abs().amax(-1) / 7).clamp_min(1e-12)  # [rows, groups]
            nibbles = (torch.round(groups / scale[..., None]).clamp(-8, 7) + 8).reshape(w.shape).to(torch.int16)
            q = (nibbles[:, 0::2] * 16 + nibbles[:, 1::2]).to(torch.uint8)
        self.register_buffer("qweight", q)
        self.register_buffer("scales", scale.float())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        if self.bits == 8:
            return ops.embedding_byte.default(self.qweight, self.scales, None, -127, 127, input_ids)
        return ops.embedding_4bit.default(self.qweight, self.scales, None, -8, 7, input_ids)


def table_bits(embedding: str, width: int) -> int | None:
    """`quantize.embedding` as the .pte's table: 4-bit groups need a width that is a multiple of GROUP."""
    return {"int4": 4 if width % GROUP == 0 else 8, "int8": 8, "fp32": None}[embedding]


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in parent.named_children():
            if child is old:
                setattr(parent, name, new)
                return
    raise ValueError("module not found")


def signature_module(model: TaskModel, embedding_bits: int | None) -> nn.Module:
    """The exported signature (int64 inputs by name -> the task's outputs), on a copy with eager
    attention and, when asked, the quantized word-embedding table."""
    m = copy.deepcopy(model).eval()
    m.set_attention("eager")
    if embedding_bits is not None:
        word = m.arch.word_embeddings(m.encoder)
        replace_module(m, word, QuantizedWordEmbedding(word.weight, embedding_bits))
    return _Outputs(m).eval()


def _rows(model: TaskModel, split: TokenizedSplit, start: int, n: int, seq_len: int) -> tuple[torch.Tensor, ...]:
    return tuple(
        torch.from_numpy(np.ascontiguousarray(getattr(split, name)[start : start + n, :seq_len])).long()
        for name in model.input_names
    )


def exported_program(module: nn.Module, model: TaskModel, example: TokenizedSplit, seq_len: int):
    batch = torch.export.Dim("batch", max=MAX_BATCH)
    seq = torch.export.Dim("sequence", min=2, max=seq_len)
    args = _rows(model, example, 0, 2, seq_len)
    dynamic = {name: {0: batch, 1: seq} for name in model.input_names}
    return torch.export.export(module, args, dynamic_shapes=dynamic)


def layer_groups(model: TaskModel, module: nn.Module) -> dict[str, str]:
    """Encoder layers and the head by name in the exported signature: what the int8 budget may keep float."""
    names = {id(m): n for n, m in module.named_modules()}
    inner = module.model
    groups = {f"layer {i}": names[id(layer)] for i, layer in enumerate(model.arch.layers(inner.encoder))}
    if any(True for _ in inner.head.parameters()):
        groups["head"] = names[id(inner.head)]
    return groups


def in_modules(node: torch.fx.Node, names: list[str]) -> bool:
    """Whether an exported node was traced inside one of the named modules (its nn_module_stack;
    XNNPACK's quantizer cannot skip a module by name: `set_module_name(name, None)` asserts)."""
    paths = [f".{path}." for path, _ in (node.meta.get("nn_module_stack") or {}).values()]
    return any(f".{name}." in path for path in paths for name in names)


def int8_program(
    model: TaskModel,
    calibration: TokenizedSplit,
    seq_len: int,
    n_calibration: int,
    embedding_bits: int | None,
    keep_float: list[str] = (),
    only: str | None = None,
):
    """PT2E static int8 with XNNPACK's quantizer: (the converted module, the exported program). `keep_float`:
    module names the quantizer skips; `only`: quantize that module alone (the sensitivity probe)."""
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = signature_module(model, embedding_bits)
    config = xq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = float_only(xq.XNNPACKQuantizer)().set_global(config)
    if only is not None:
        quantizer.set_filter_function(lambda node: in_modules(node, [only]))
    elif keep_float:
        quantizer.set_filter_function(lambda node: not in_modules(node, list(keep_float)))
    with quiet_output():
        graph = exported_program(module, model, calibration, seq_len).module()
        prepared = prepare_pt2e(graph, quantizer)
        n = min(n_calibration, len(calibration))
        with torch.no_grad():
            for start in range(0, n, CALIBRATION_BATCH):
                prepared(*_rows(model, calibration, start, min(CALIBRATION_BATCH, n - start), seq_len))
        converted = convert_pt2e(prepared)
        return converted, exported_program(converted, model, calibration, seq_len)


def int4_program(model: TaskModel, example: TokenizedSplit, seq_len: int, embedding_bits: int | None):
    """8da4w: int4 weights in groups of GROUP with int8 dynamic activations, for every linear layer whose
    input width is a multiple of GROUP; the others (a pruned FFN's output layer, 614 inputs on the
    default model) get int8 per-channel weights with the same dynamic activations, not float."""
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, quantize_

    module = signature_module(model, embedding_bits)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    int4 = {id(m) for m in linears if m.in_features % GROUP == 0}
    with quiet_output():
        for chosen, dtype, granularity in (
            (int4, torch.int4, PerGroup(GROUP)),
            ({id(m) for m in linears} - int4, torch.int8, PerAxis(0)),
        ):
            config = Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)
            quantize_(module, config, filter_fn=lambda m, fqn, chosen=chosen: id(m) in chosen)
        return exported_program(module, model, example, seq_len), {
            "int4_linears": len(int4),
            "int8_linears": len(linears) - len(int4),
        }


def lower(program, path: Path) -> dict[str, Any]:
    """XNNPACK partition + ExecuTorch program at `path`; what was not delegated is reported."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    with quiet_output(), native_stderr_captured():
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        graph = edge.exported_program().graph
        calls = [n for n in graph.nodes if n.op == "call_function"]
        delegated = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
        portable = sorted(
            {
                str(getattr(n.target, "__name__", n.target)).removesuffix(".default")
                for n in calls
                if "executorch_call_delegate" not in str(n.target) and "getitem" not in str(n.target)
            }
        )
        buffer = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True)).buffer
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer)
    return {"delegate": "XNNPACK", "xnnpack_partitions": delegated, "portable_ops": portable}


def sensitivity(
    model: TaskModel,
    groups: dict[str, str],
    data: TokenizedData,
    seq_len: int,
    qcfg: QuantizeConfig,
    reference: np.ndarray,
    progress: Progress,
) -> list[tuple[str, float]]:
    """Quantize one group at a time (the rest float, PT2E's reference kernels in PyTorch: no lowering);
    groups ranked by output MSE vs fp32 on up to 256 validation rows, worst first."""
    sub = data.val.head(256)
    ranking = []
    for group in progress.track(list(groups), len(groups), "ExecuTorch int8 sensitivity"):
        converted, _ = int8_program(model, data.train, seq_len, qcfg.calibration_examples, None, only=groups[group])
        out = _predict_module(model, converted, sub, seq_len)
        ranking.append((group, float(((out - reference[: len(sub)]) ** 2).mean())))
    return sorted(ranking, key=lambda r: -r[1])


def _predict_module(model: TaskModel, module: Callable, split: TokenizedSplit, seq_len: int) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for start in range(0, len(split), 32):
            outs.append(module(*_rows(model, split, start, min(32, len(split) - start), seq_len)).float().numpy())
    return np.concatenate(outs)


def export_int8(
    model: TaskModel,
    path: Path,
    data: TokenizedData,
    fp32: Path,
    seq_len: int,
    qcfg: QuantizeConfig,
    task: Task,
    progress: Progress = Silent(),
) -> dict[str, Any]:
    """int8 .pte at `path` within the budget on validation (or the closest try, `budget_met: false`)."""
    bits: int | None = table_bits(qcfg.embedding, model.dims.hidden)
    fp32_val = ExecuTorchModel(fp32).predict(data.val)
    base = task.score(fp32_val, data.val.labels)
    groups = layer_groups(model, signature_module(model, None))

    def attempt(keep: list[str], bits: int | None) -> tuple[float, float, dict[str, Any]]:
        _, program = int8_program(model, data.train, seq_len, qcfg.calibration_examples, bits, keep)
        info = lower(program, path)
        out = ExecuTorchModel(path).predict(data.val)
        return task.score(out, data.val.labels), task.agreement(out, fp32_val), info

    def within(score: float, agree: float) -> bool:
        return qcfg.within_budget((base - score) * 100, agree)

    kept: list[str] = []
    score, agree, info = attempt(kept, bits)
    m = task.metric
    report: dict[str, Any] = {f"fp32_val_{m}": base, f"first_try_val_{m}": score, "first_try_val_agreement": agree}
    tries = [(score, agree, [], bits)]
    if not within(score, agree) and bits == 4:
        # the 4-bit table is the cheapest thing to give back: int8 rows before any layer stays float
        bits = 8
        score, agree, info = attempt(kept, bits)
        tries.append((score, agree, [], bits))
        report["embedding_fallback"] = "int8 (4-bit tables missed the budget)"
        progress.log(f"  ExecuTorch int8 budget: embedding table int8 -> val drop {(base - score) * 100:.2f} points")
    if not within(score, agree):
        ranking = sensitivity(model, groups, data, seq_len, qcfg, fp32_val, progress)
        report["sensitivity"] = [{"group": g, "output_mse": e} for g, e in ranking]
        for group, _ in ranking[: qcfg.max_excluded_groups]:
            kept = [*kept, group]
            score, agree, info = attempt([groups[g] for g in kept], bits)
            tries.append((score, agree, kept, bits))
            progress.log(
                f"  ExecuTorch int8 budget: {group} kept float -> val drop {(base - score) * 100:.2f} points, "
                f"agreement {agree:.3f}"
            )
            if within(score, agree):
                break
    if not within(score, agree):  # nothing met it: ship the closest try (best score, then agreement)
        best = max(tries, key=lambda t: (t[0], t[1]))
        if best is not tries[-1]:
            score, agree, kept, bits = best
            _, _, info = attempt([groups[g] for g in kept], bits)
    report["tries"] = [
        {"float_groups": k, "embedding_bits": b, f"val_{m}": sc, "val_agreement": a} for sc, a, k, b in tries
    ]
    return (
        report
        | info
        | {
            "quantizer": "XNNPACKQuantizer PT2E (static, per-channel int8 weights, int8 activations)",
            "calibration_examples": min(qcfg.calibration_examples, len(data.train)),
            "embedding_bits": bits,
            "float_groups": kept,
            f"val_{m}": score,
            "val_agreement": agree,
            "val_drop_points": round((base - score) * 100, 4),
            "budget_points": qcfg.max_accuracy_drop,
            "budget_min_agreement": qcfg.min_agreement,
            "budget_met": within(score, agree),
        }
    )


def budget_record(
    task: Task, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray, qcfg: QuantizeConfig
) -> dict[str, Any]:
    """A quantized program against its fp32 program on validation, in the int8 budget's terms."""
    score, base, agree = task.score(outputs, labels), task.score(reference, labels), task.agreement(outputs, reference)
    drop = (base - score) * 100
    return {
        f"fp32_val_{task.metric}": base,
        f"val_{task.metric}": score,
        "val_agreement": agree,
        "val_drop_points": round(drop, 4),
        "budget_points": qcfg.max_accuracy_drop,
        "budget_min_agreement": qcfg.min_agreement,
        "budget_met": qcfg.within_budget(drop, agree),
    }


def run_fp32(
    ctx: Stages, *, role: str, model: TaskModel, data: TokenizedData, seq_len: int, parity_atol: float
) -> Result:
    """The stage: `executorch/ROLE.fp32.pte`, kept only if it matches PyTorch."""
    require_executorch()
    path = ctx.path(f"executorch/{role}.fp32.pte")
    info = lower(exported_program(signature_module(model, None), model, data.test, seq_len), path)
    parity = check_parity(model, path, data.test, parity_atol)
    return parity | info | {"max_seq_len": seq_len}, [path]


def run_quantized(
    ctx: Stages,
    *,
    role: str,
    variant: str,
    model: TaskModel,
    data: TokenizedData,
    fp32: Artifact,
    seq_len: int,
    qcfg: QuantizeConfig,
) -> Result:
    """The stage: `executorch/ROLE.VARIANT.pte` (int8 or 8da4w), compared with the fp32 .pte on test."""
    require_executorch()
    path, source, task = ctx.path(f"executorch/{role}.{variant}.pte"), ctx.path(fp32.path), model.task
    if variant == "int8":
        report = export_int8(model, path, data, source, seq_len, qcfg, task, ctx.progress)
    else:  # no fallback here: the budget is checked and recorded (8da4w is the int4 choice, int8 the safe one)
        bits = table_bits(qcfg.embedding, model.dims.hidden)
        program, counts = int4_program(model, data.test, seq_len, bits)
        report = counts | lower(program, path) | {"embedding_bits": bits, "group_size": GROUP}
        report |= budget_record(
            task,
            ExecuTorchModel(path).predict(data.val),
            ExecuTorchModel(source).predict(data.val),
            data.val.labels,
            qcfg,
        )
        report["quantizer"] = (
            "torchao Int8DynamicActivationIntxWeightConfig (int4 weights in groups of 32; int8 per-channel "
            "where the input width is not a multiple of 32)"
        )
    report |= {"max_seq_len": seq_len} | task.compare(
        ExecuTorchModel(path).predict(data.test), ExecuTorchModel(source).predict(data.test), data.test.labels
    )
    report["size_ratio_vs_fp32"] = round(fp32.bytes / path.stat().st_size, 3)
    return report, [path]
