"""Budget search: the best pruning plan and artifact format that meets a latency/size/accuracy
budget on one device.

The space is what the prune stage can do to the distilled student: remove whole layers,
a ratio of heads and of FFN neurons (ranked by the same importance scores), prune the
vocabulary or not, and ship as one of several formats (ONNX/TFLite, int8/fp32). Given the
scores, a plan's exact shape is known without training, so:

1. **Latency model, per device and format.** Random shapes of the student, untrained (the
   weights do not change the latency), are exported, quantized and run by the device's own
   runner. A non-negative linear model over per-layer work (layers, attention/FFN blocks
   present, attention and FFN MACs) is fitted with relative-error weighting; a held-out
   share of the points checks it. Why not a FLOP count: on small models a fixed cost per
   layer and per op dominates, and it differs per runtime and device.
2. **Prediction over the whole grid**: latency from the model, size from a linear fit of the
   measured artifact sizes on parameter counts. Plans that cannot fit are dropped before any
   training; if none fits, the closest plan and the constraint it misses are named.
3. **Accuracy estimate** for the largest feasible plans (one per depth/heads/vocab choice):
   a short distillation from the teacher's soft targets, then the real artifact's accuracy
   on the validation split and its latency *measured* on the device (those measurements also
   tell how good the latency model is on plans it never saw).
4. **Choice**: the best estimated accuracy whose measured latency and size meet the budget;
   the caller trains that plan fully through the normal prune stage.

Reads `search:`, the measurement, `quantize:`, `export.opset`, `distill:`, `prune.recovery_lr`,
`data.max_length` and `seed`. The device comes in as a `Probe` (its name, the measurement and
a function that measures one file there), so this module holds no device or run-dir state;
every measurement and estimate is a resumable stage of its own.
"""

from __future__ import annotations

import copy
import itertools
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepipe import runtimes
from edgepipe.config import DistillConfig, PruneConfig, QuantizeConfig, SearchConfig
from edgepipe.errors import BudgetError, ConfigError
from edgepipe.export import executorch, tflite
from edgepipe.export.onnx import export_onnx
from edgepipe.manifest import Manifest
from edgepipe.measurement import Measured, Measurement
from edgepipe.model.load import Tokenizer
from edgepipe.model.surgery import apply_plan
from edgepipe.model.task_model import TaskModel
from edgepipe.model.train import TrainSettings, distillation_objective, fit, predict
from edgepipe.pareto import undominated
from edgepipe.pipeline import quantize as Q
from edgepipe.pipeline.data import Dataset
from edgepipe.pipeline.distill import SoftTargets
from edgepipe.pipeline.prune import Importance, non_embedding_params, select
from edgepipe.progress import Progress
from edgepipe.rundir import stable_hash
from edgepipe.stages import Stages
from edgepipe.tokenized import TokenizedData, TokenizedSplit

FEATURES = ("constant", "layers", "attention_layers", "ffn_layers", "attention_mmacs", "ffn_mmacs")
MIN_POINTS = len(FEATURES) + 2  # a fit plus two points it has not seen


# -- shapes and features ------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One point of the search space: prune settings of the student."""

    layers_removed: int
    heads: float
    ffn: float
    vocab: bool

    @property
    def label(self) -> str:
        return f"L-{self.layers_removed}_h{self.heads:.2f}_f{self.ffn:.2f}_" + ("vocab" if self.vocab else "fullvocab")

    def prune_overrides(self) -> dict[str, Any]:
        return {
            "prune.layers": self.layers_removed,
            "prune.heads": self.heads,
            "prune.ffn": self.ffn,
            "prune.vocab": self.vocab,
            "prune.target_params": None,
        }


@dataclass(frozen=True)
class Dims:
    """What the formulas need about the student (and the deployment sequence length)."""

    hidden: int
    head_dim: int
    seq_len: int
    full_vocab: int
    kept_vocab: int
    other_embeddings: int  # position + token-type rows

    def vocab_rows(self, pruned_vocab: bool) -> int:
        return self.kept_vocab if pruned_vocab else self.full_vocab


def features(shape: dict[str, list[int]], d: Dims) -> list[float]:
    S, H, dh = d.seq_len, d.hidden, d.head_dim
    heads, ffn = shape["heads"], shape["ffn"]
    attention = sum(4 * S * H * h * dh + 2 * S * S * h * dh for h in heads)
    return [
        1.0,
        float(len(heads)),
        float(sum(h > 0 for h in heads)),
        float(sum(f > 0 for f in ffn)),
        attention / 1e6,
        sum(2 * S * H * f for f in ffn) / 1e6,
    ]


def param_counts(shape: dict[str, list[int]], vocab_rows: int, d: Dims) -> tuple[int, int]:
    """(non-embedding, embedding) parameters: what an artifact's size is made of."""
    return non_embedding_params(d.hidden, d.head_dim, shape["heads"], shape["ffn"]), (
        vocab_rows + d.other_embeddings
    ) * d.hidden


def random_shape(rng: np.random.Generator, layers: tuple[int, int], heads: int, ffn: int) -> dict[str, list[int]]:
    n = int(rng.integers(layers[0], layers[1] + 1))
    shape = {
        "heads": [int(x) for x in rng.integers(0, heads + 1, n)],
        "ffn": [int(x) for x in rng.integers(0, ffn + 1, n)],
    }
    if not sum(shape["heads"]):
        shape["heads"][0] = 1
    if not sum(shape["ffn"]):
        shape["ffn"][0] = 1
    return shape


def plan_layout(scores: Importance, plan: Plan, d: Dims) -> dict[str, Any] | None:
    """Which layers, heads and neurons the plan keeps (the prune stage's own selection); None if it keeps none."""
    try:
        cfg = PruneConfig(heads=plan.heads, ffn=plan.ffn, layers=plan.layers_removed)
        return select(scores.heads, scores.ffn, cfg, d.hidden, d.head_dim)
    except (ConfigError, ValueError):
        return None


def layout_shape(layout: dict[str, Any]) -> dict[str, list[int]]:
    return {"heads": [len(h) for h in layout["heads"]], "ffn": [len(f) for f in layout["ffn"]]}


# -- models of latency and size -----------------------------------------------


@dataclass
class LinearFit:
    """y = coef · x with coef >= 0, fitted to minimise *relative* error."""

    coef: list[float]
    n: int

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, relative: bool = True) -> LinearFit:
        from scipy.optimize import nnls

        w = 1.0 / y if relative else np.ones_like(y)
        scale = np.maximum(np.abs(X).max(axis=0), 1e-12)  # nnls is better conditioned on unit-scaled columns
        coef, _ = nnls((X / scale) * w[:, None], y * w)
        return cls((coef / scale).tolist(), len(y))

    def predict(self, x: list[float] | np.ndarray) -> float:
        return float(np.dot(self.coef, x))


def pct_errors(fit_: LinearFit, X: np.ndarray, y: np.ndarray) -> list[float]:
    return [abs(fit_.predict(x) - v) / v * 100 for x, v in zip(X, y)]


def _error_summary(errors: list[float]) -> dict[str, Any]:
    if not errors:
        return {"n": 0, "median_abs_pct": None, "max_abs_pct": None}
    return {
        "n": len(errors),
        "median_abs_pct": round(float(np.median(errors)), 2),
        "max_abs_pct": round(float(np.max(errors)), 2),
    }


# -- artifacts ----------------------------------------------------------------


@dataclass(frozen=True)
class Writers:
    """The settings the pipeline's own writers take, so the measured graph is the shipped graph
    (minus the int8 budget's fp32 fallbacks)."""

    seq_len: int
    opset: int
    qcfg: QuantizeConfig

    @property
    def key(self) -> str:
        return stable_hash(
            {"seq_len": self.seq_len, "opset": self.opset, "quantize": self.qcfg.model_dump(mode="json")}
        )


def build_artifact(model: TaskModel, fmt: str, path: Path, train: TokenizedSplit, w: Writers) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt.startswith("onnx"):
        fp32 = path.with_suffix(".fp32.onnx") if fmt == "onnx_int8" else path
        export_onnx(model, fp32, train, opset=w.opset)
        if fmt == "onnx_int8":
            pre = path.with_suffix(".pre.onnx")
            Q.preprocess(fp32, pre)
            qcfg = w.qcfg.model_copy(update={"op_types": Q.task_op_types(w.qcfg, model.task)})
            if model.task.int8_activations == "dynamic":  # what the task's int8 ships as (embeddings)
                Q.dynamic_int8(pre, path, qcfg)
            else:
                reader = Q.CalibrationReader(train, qcfg.calibration_examples, w.seq_len, model=fp32)
                Q.static_int8(pre, path, reader, qcfg, [], path.with_suffix(".calibration.json"))
        return path
    if fmt.startswith("executorch"):
        executorch.require_executorch()
        if fmt == "executorch_fp32":
            program = executorch.exported_program(executorch.signature_module(model, None), model, train, w.seq_len)
        else:
            bits = executorch.table_bits(w.qcfg.embedding, model.dims.hidden)
            _, program = executorch.int8_program(model, train, w.seq_len, w.qcfg.calibration_examples, bits)
        executorch.lower(program, path)
        return path
    if fmt == "tflite_fp32":
        tflite.export_tflite_fp32(model, path, train, w.seq_len)
    elif model.task.int8_activations == "dynamic":
        fp32 = path.with_suffix(".fp32.tflite")
        tflite.export_tflite_fp32(model, fp32, train, w.seq_len)
        tflite.export_tflite_dynamic_int8(fp32, path)
    else:
        tflite.export_tflite_int8(model, path, train, w.seq_len, w.qcfg.calibration_examples, w.qcfg.embedding)
    return path


def _suffix(fmt: str) -> str:
    return {"onnx": ".onnx", "tflite": ".tflite", "executorch": ".pte"}[fmt.split("_")[0]]


# -- budget checks ------------------------------------------------------------


def misses(row: dict[str, Any], s: SearchConfig, latency_key: str, accuracy_key: str | None) -> dict[str, str]:
    """Constraint -> how it is missed, e.g. {"latency": "2.10 ms > 1.60 ms"}."""
    out = {}
    lat, size = row.get(latency_key), row["size_mb"]
    if s.max_latency_ms is not None and lat is not None and lat > s.max_latency_ms:
        out["latency"] = f"{lat:.2f} ms > {s.max_latency_ms:g} ms"
    if s.max_size_mb is not None and size > s.max_size_mb:
        out["size"] = f"{size:.2f} MB > {s.max_size_mb:g} MB"
    memory = row.get("peak_rss_mb")  # measured only: the grid's predictions have none
    if s.max_memory_mb is not None and memory is not None and memory > s.max_memory_mb:
        out["memory"] = f"peak RSS {memory:.0f} MB > {s.max_memory_mb:g} MB"
    acc = row.get(accuracy_key) if accuracy_key else None
    if s.min_accuracy is not None and acc is not None and acc < s.min_accuracy:
        out["accuracy"] = f"{acc * 100:.1f}% < {s.min_accuracy * 100:g}%"
    return out


def overshoot(row: dict[str, Any], s: SearchConfig, latency_key: str, accuracy_key: str | None) -> float:
    """How far outside the budget a plan is, as a sum of relative excesses (0 = inside)."""
    total = 0.0
    if s.max_latency_ms is not None and row.get(latency_key) is not None:
        total += max(0.0, row[latency_key] / s.max_latency_ms - 1)
    if s.max_size_mb is not None:
        total += max(0.0, row["size_mb"] / s.max_size_mb - 1)
    if s.max_memory_mb is not None and row.get("peak_rss_mb") is not None:
        total += max(0.0, row["peak_rss_mb"] / s.max_memory_mb - 1)
    if s.min_accuracy is not None and accuracy_key and row.get(accuracy_key) is not None:
        total += max(0.0, (s.min_accuracy - row[accuracy_key]) / s.min_accuracy)
    return total


def pareto_front(rows: list[dict[str, Any]]) -> list[int]:
    """Indices of evaluated candidates that no other beats on latency, size and accuracy at once."""
    return undominated([(r["latency_ms"], r["size_mb"], -r["accuracy"]) for r in rows])


def _describe(row: dict[str, Any]) -> str:
    return f"{row['plan']} as {row['format']}"


# -- the search -----------------------------------------------------------------

Measure = Callable[[Path], Measured]


@dataclass
class Probe:
    """Measures one model file's latency on the budget's device. Keyed on the device and how it
    measures, not on how it is reached (a board's address or key may change; its numbers do not)."""

    device: str
    measurement: Measurement
    measure: Measure

    @property
    def key(self) -> str:
        return stable_hash({"device": self.device, "measurement": self.measurement.model_dump(mode="json")})


@dataclass
class Shapes:
    """A student as the latency points need it: its architecture and sizes, not its trained weights
    (the latency of a shape does not depend on them), so a retrained student reuses the points."""

    model: TaskModel

    @property
    def key(self) -> str:
        return stable_hash(
            {"arch": self.model.arch.model_type, "config": self.model.config.to_dict(), "task": self.model.task.name}
        )


@dataclass
class SearchData:
    """What the search trains and measures with."""

    tokens: TokenizedData  # the student's (full-vocabulary) tokenization
    train: TokenizedSplit  # the transfer set: labelled training split, then texts added for distillation
    val: TokenizedSplit
    vocab_train: TokenizedSplit | None  # re-tokenized with the pruned vocabulary (None: vocab pruning not searched)
    vocab_val: TokenizedSplit | None
    kept_token_ids: list[int] | None
    soft_targets: torch.Tensor  # teacher outputs on the transfer set (`train` here)
    latency_inputs: Path  # runner inputs with ids valid for every vocabulary size
    key: str  # hash of everything above


def prepare(
    ctx: Stages,
    student: TaskModel,
    dataset: Dataset,
    data: TokenizedData,
    tokenizer: Tokenizer,
    soft_targets: SoftTargets,
    vocab: list[bool],
    max_length: int,
) -> SearchData:
    """The pruned vocabulary (when searched), its tokenization, and latency inputs valid for every vocabulary size."""
    kept = vocab_data = None
    if True in vocab:
        v = student.arch.prune_vocabulary(
            tokenizer.hf, dataset.flat_texts("train") + dataset.extra, tokenizer.directory, ctx.path("search/vocab")
        )
        kept, vocab_data = v.kept_ids, dataset.tokenize(v.tokenizer, max_length)
    rows = min(len(kept) if kept else student.dims.vocab, student.dims.vocab)
    latency_inputs = ctx.path("data/search_latency")
    data.test.head(256).with_ids_below(rows).save(latency_inputs)
    key = stable_hash(
        {"data": data.key, "vocab": vocab_data.key if vocab_data else None, "soft_targets": soft_targets.key}
    )
    return SearchData(
        data,
        data.transfer,
        data.val,
        vocab_data and vocab_data.transfer,
        vocab_data and vocab_data.val,
        kept,
        soft_targets.logits,
        latency_inputs,
        key,
    )


def _latency_point(
    ctx: Stages,
    *,
    shapes: Shapes,
    shape: dict,
    rows: int,
    fmt: str,
    seed: int,
    tokens: TokenizedData,
    writers: Writers,
    probe: Probe,
) -> tuple[dict, list]:
    """One random shape, exported and quantized by the pipeline's writers (calibrated on `tokens`), measured on the device."""
    model = _shaped(shapes.model, shape, rows, seed)
    path = build_artifact(
        model, fmt, ctx.path(f"search/work/point{seed}/model{_suffix(fmt)}"), tokens.train.with_ids_below(rows), writers
    )
    try:
        result = probe.measure(path)
        size = path.stat().st_size
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    return {"p50_ms": result.latency_ms.p50, "bytes": size}, []


def _candidate(
    ctx: Stages,
    *,
    student: TaskModel,
    scores: Importance,
    plan: dict,
    layout: dict,
    formats: list[str],
    data: SearchData,
    steps: int,
    distill: DistillConfig,
    recovery_lr: float,
    seed: int,
    writers: Writers,
    probe: Probe,
) -> tuple[dict, list]:
    """A plan trained briefly: its real artifacts' metric on val, latency on the device and size."""
    p = Plan(**plan)
    model, train, val, report = _estimate(student, layout, p, data, distill, recovery_lr, steps, seed, ctx.progress)
    rows = []
    for fmt in formats:
        path = build_artifact(model, fmt, ctx.path(f"search/work/{p.label}/model{_suffix(fmt)}"), train, writers)
        try:
            score = model.task.score(runtimes.predict(path, val), val.labels)
            result = probe.measure(path)
            size = path.stat().st_size
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        rows.append(
            {
                "format": fmt,
                "accuracy": score,
                "latency_ms": result.latency_ms.p50,
                "size_mb": round(size / 1e6, 3),
                "peak_rss_mb": result.peak_rss_mb,
            }
        )
    return {
        "pytorch_val_accuracy": float(report["val_accuracy"]),
        "estimate_steps": report["steps"],
        "artifacts": rows,
    }, []


def search(
    ctx: Stages,
    student: TaskModel,
    scores: Importance,
    data: SearchData,
    *,
    search: SearchConfig,
    writers: Writers,
    distill: DistillConfig,
    recovery_lr: float,
    seed: int,
    probe: Probe,
) -> tuple[Plan, str, dict[str, Any]]:
    """Returns (plan, format, report); raises BudgetError when nothing in the space meets the budget."""
    s, device, progress = search, probe.device, ctx.progress
    t0 = time.perf_counter()
    deadline = t0 + s.time_budget_s
    sd = student.dims
    kept = len(data.kept_token_ids) if data.kept_token_ids else sd.vocab
    d = Dims(sd.hidden, sd.head_dim, writers.seq_len, sd.vocab, kept, sd.other_embedding_rows)
    slug = device.replace(":", "_").replace("@", "_").replace("/", "_")
    measured = probe.measurement.model_dump(exclude={"accuracy", "max_eval", "metric"})
    report: dict[str, Any] = {
        "device": device,
        "metric": student.task.metric,
        "budget": {k: getattr(s, k) for k in ("max_latency_ms", "max_size_mb", "max_memory_mb", "min_accuracy")},
        "space": s.model_dump(include={"formats", "layers_removed", "heads", "ffn", "vocab"}),
        "bench": measured,
        "features": list(FEATURES),
        "dims": asdict(d),
    }

    # 1. latency points -----------------------------------------------------
    rng = np.random.default_rng(seed)
    removable = [n for n in s.layers_removed if n < sd.layers]  # a default like [0, 1] on a 1-layer student
    lowest = sd.layers - max(removable)
    shapes = [
        (
            random_shape(rng, (lowest, sd.layers), sd.heads, sd.intermediate),
            bool(rng.integers(0, 2)) if len(s.vocab) > 1 else s.vocab[0],
        )
        for _ in range(s.latency_points)
    ]
    points: dict[str, list[dict[str, Any]]] = {f: [] for f in s.formats}
    stopped_by = None
    todo = [
        (i, fmt) for i in range(s.latency_points) for fmt in s.formats
    ]  # interleaved: a time cut leaves every format alike
    for i, fmt in progress.track(todo, len(todo), f"search: latency points on {device}"):
        if time.perf_counter() > deadline and all(len(p) >= MIN_POINTS for p in points.values()):
            stopped_by = "time_budget"
            break
        shape, vocab = shapes[i]
        rows = d.vocab_rows(vocab)
        r = ctx.run(
            f"search_{slug}_point{i}_{fmt}",
            _latency_point,
            mode="local",
            shapes=Shapes(student),
            shape=shape,
            rows=rows,
            fmt=fmt,
            seed=seed + i,
            tokens=data.tokens,
            writers=writers,
            probe=probe,
        ).result
        non_emb, emb = param_counts(shape, rows, d)
        points[fmt].append(
            {"shape": shape, "vocab_rows": rows, "features": features(shape, d), "params": [non_emb, emb], **r}
        )

    models: dict[str, dict[str, Any]] = {}
    for fmt, pts in points.items():
        X = np.array([p["features"] for p in pts])
        y = np.array([p["p50_ms"] for p in pts])
        n_hold = min(len(pts) - MIN_POINTS + 2, int(round(len(pts) * s.holdout))) if len(pts) >= MIN_POINTS else 0
        hold = np.random.default_rng(seed + 1).permutation(len(pts))[:n_hold]
        fit_idx = np.setdiff1d(np.arange(len(pts)), hold)
        check = LinearFit.fit(X[fit_idx], y[fit_idx]) if n_hold else None
        full = LinearFit.fit(X, y)
        P = np.array([[1.0, *p["params"]] for p in pts])
        size = LinearFit.fit(P, np.array([p["bytes"] for p in pts], dtype=float))
        models[fmt] = {
            "latency": full,
            "size": size,
            "points": pts,
            "holdout": _error_summary(pct_errors(check, X[hold], y[hold]) if check else []),
            "fit": _error_summary(pct_errors(full, X, y)),
        }

    # 2. predictions over the grid -------------------------------------------
    grid = []
    layouts: dict[Plan, dict[str, Any]] = {}  # kept for the plans trained below
    for removed, h, f, vocab in itertools.product(removable, s.heads, s.ffn, s.vocab):
        plan = Plan(removed, h, f, vocab)
        layout = plan_layout(scores, plan, d)
        if layout is None:
            continue
        layouts[plan] = layout
        shape = layout_shape(layout)
        non_emb, emb = param_counts(shape, d.vocab_rows(vocab), d)
        for fmt in s.formats:
            grid.append(
                {
                    "plan": plan.label,
                    "format": fmt,
                    "shape": shape,
                    "non_embedding_params": non_emb,
                    "_plan": plan,
                    "predicted_latency_ms": round(models[fmt]["latency"].predict(features(shape, d)), 4),
                    "size_mb": round(models[fmt]["size"].predict([1.0, non_emb, emb]) / 1e6, 3),
                }
            )
    for g in grid:
        g["predicted_feasible"] = not misses(g, s, "predicted_latency_ms", None)
    feasible = [g for g in grid if g["predicted_feasible"]]
    report["latency_models"] = {
        fmt: {
            "coef": m["latency"].coef,
            "points": len(m["points"]),
            "holdout_error": m["holdout"],
            "fit_error": m["fit"],
            "size_coef": m["size"].coef,
        }
        for fmt, m in models.items()
    }
    report["latency_points"] = {
        fmt: [
            {k: p[k] for k in ("shape", "vocab_rows", "p50_ms", "bytes")}
            | {"predicted_ms": round(models[fmt]["latency"].predict(p["features"]), 4)}
            for p in pts
        ]
        for fmt, pts in points.items()
    }
    report["grid"] = [{k: v for k, v in g.items() if k != "_plan"} for g in grid]
    if not feasible:
        closest = min(grid, key=lambda g: overshoot(g, s, "predicted_latency_ms", None))
        what = "; ".join(misses(closest, s, "predicted_latency_ms", None).values())
        raise BudgetError(
            f"no plan in the search space meets the budget on {device}: the closest, {_describe(closest)}, is predicted at {what}; "
            "raise the budget or widen search.layers_removed/heads/ffn/formats",
            report | {"chosen": None, "seconds": round(time.perf_counter() - t0, 1)},
        )

    # 3. accuracy estimates of the largest feasible plans ---------------------
    best_per_family: dict[tuple, dict[str, Any]] = {}
    for g in feasible:
        p = g["_plan"]
        fam = (p.layers_removed, p.heads, p.vocab)
        if fam not in best_per_family or g["non_embedding_params"] > best_per_family[fam]["non_embedding_params"]:
            best_per_family[fam] = g
    chosen_plans = [g["_plan"] for g in sorted(best_per_family.values(), key=lambda g: -g["non_embedding_params"])][
        : s.candidates
    ]
    evaluated: list[dict[str, Any]] = []
    for n_done, plan in enumerate(
        progress.track(chosen_plans, len(chosen_plans), f"search: accuracy estimates on {device}")
    ):
        if n_done and time.perf_counter() > deadline:
            stopped_by = "time_budget"
            break
        formats = [g["format"] for g in feasible if g["_plan"] == plan]
        r = ctx.run(
            f"search_{slug}_{plan.label}",
            _candidate,
            mode="local",
            student=student,
            scores=scores,
            plan=asdict(plan),
            layout=layouts[plan],
            formats=formats,
            data=data,
            steps=s.estimate_steps,
            distill=distill,
            recovery_lr=recovery_lr,
            seed=seed,
            writers=writers,
            probe=probe,
        ).result
        for a in r["artifacts"]:
            g = next(g for g in grid if g["_plan"] == plan and g["format"] == a["format"])
            evaluated.append(
                {
                    "plan": plan.label,
                    "format": a["format"],
                    "shape": g["shape"],
                    "predicted_latency_ms": g["predicted_latency_ms"],
                    "predicted_size_mb": g["size_mb"],
                    "latency_ms": a["latency_ms"],
                    "size_mb": a["size_mb"],
                    "peak_rss_mb": a.get("peak_rss_mb"),  # absent in candidates recorded before memory budgets
                    "accuracy": a["accuracy"],
                    "pytorch_val_accuracy": r["pytorch_val_accuracy"],
                    "_plan": plan,
                }
            )

    # 4. choice --------------------------------------------------------------
    for row in evaluated:
        row["misses"] = misses(row, s, "latency_ms", "accuracy")
    front = pareto_front(evaluated)
    for i, row in enumerate(evaluated):
        row["pareto"] = i in front
    ok = [r for r in evaluated if not r["misses"]]
    errors = [abs(r["predicted_latency_ms"] - r["latency_ms"]) / r["latency_ms"] * 100 for r in evaluated]
    for fmt in models:
        fmt_err = [e for e, r in zip(errors, evaluated) if r["format"] == fmt]
        report["latency_models"][fmt]["candidate_error"] = _error_summary(fmt_err)
    report["latency_model_error"] = {"candidates": _error_summary(errors)}
    report["candidates"] = [{k: v for k, v in r.items() if k != "_plan"} for r in evaluated]
    report["stopped_by"] = stopped_by or "done"
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["time_budget_s"] = s.time_budget_s
    if not ok:
        closest = min(evaluated, key=lambda r: overshoot(r, s, "latency_ms", "accuracy"))
        report["chosen"] = None
        raise BudgetError(
            f"none of the {len(evaluated)} plans tried meets the budget on {device}: the closest, {_describe(closest)}, "
            f"misses {'; '.join(closest['misses'].values())}; raise the budget, or raise search.candidates/estimate_steps",
            report,
        )
    best = max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"], -r["size_mb"]))
    report["chosen"] = {k: v for k, v in best.items() if k != "_plan"} | {"prune": best["_plan"].prune_overrides()}
    return best["_plan"], best["format"], report


def _shaped(student: TaskModel, shape: dict[str, list[int]], vocab_rows: int, seed: int) -> TaskModel:
    """A student of the given shape (its kept weights, unretrained): latency is all it is for."""
    torch.manual_seed(seed)
    if len(shape["heads"]) > student.dims.layers:
        raise ValueError("shape deeper than the student")
    layout = {
        "layers": list(range(len(shape["heads"]))),
        "heads": [list(range(h)) for h in shape["heads"]],
        "ffn": [list(range(f)) for f in shape["ffn"]],
    }
    model = apply_plan(copy.deepcopy(student), layout)
    model.arch.keep_tokens(model.encoder, list(range(vocab_rows)))
    return model.eval()


def _estimate(
    student: TaskModel,
    layout: dict[str, Any],
    plan: Plan,
    data: SearchData,
    distill: DistillConfig,
    recovery_lr: float,
    steps: int,
    seed: int,
    progress: Progress,
):
    """Prune by the plan, distil for a few steps, return the model and its PyTorch validation metric."""
    model = apply_plan(student, layout)
    train, val = data.train, data.val
    if plan.vocab and data.kept_token_ids:
        model.arch.keep_tokens(model.encoder, data.kept_token_ids)
        train, val = data.vocab_train, data.vocab_val
    loss_fn = distillation_objective(
        model.task.distillation_loss(distill.temperature, distill.alpha), data.soft_targets
    )
    settings = TrainSettings(
        epochs=1.0, lr=recovery_lr, batch_size=distill.batch_size, min_steps=steps, max_steps=steps
    )
    report = fit(
        model,
        train,
        loss_fn,
        settings,
        seed=seed + 1,
        progress=progress,
        description=f"estimate {plan.label}",
        data_parallel=False,
    )
    report["val_accuracy"] = model.task.score(predict(model, val), val.labels)
    return model, train, val, report


def outcome(manifest: Manifest, search: SearchConfig, threads: int, progress: Progress) -> None:
    """The fully trained plan, measured: does the shipped artifact meet the budget on the device?
    Recorded as the search report's `final`."""
    report = manifest.search
    if not report or not report.get("chosen"):
        return
    fmt, device = report["chosen"]["format"], report["device"]
    art = manifest.artifact("pruned", fmt)
    bench = [b for b in manifest.benchmarks_of("pruned", fmt, device) if b.threads == threads]
    if art is None or not bench:
        report["final"] = None
        return
    metric = report.get("metric", "accuracy")
    val = art.get(f"val_{metric}")  # int8 ONNX has its own; others: PyTorch's
    val = manifest.models["pruned"].get(f"val_{metric}") if val is None else val
    row = {
        "latency_ms": bench[0].latency_ms.p50,
        "size_mb": round(art.bytes / 1e6, 3),
        "peak_rss_mb": bench[0].peak_rss_mb,
        "val_accuracy": val,
        "test_accuracy": art.get(f"test_{metric}"),
    }
    row["misses"] = misses(row | {"accuracy": val}, search, "latency_ms", "accuracy")
    row["meets_budget"] = not row["misses"]
    report["final"] = row
    if row["misses"]:
        progress.log(
            f"[yellow]![/yellow] the fully trained plan misses the budget on {device}: {'; '.join(row['misses'].values())}"
        )
