"""Prune stage: remove whole heads, FFN neurons, layers and unused vocabulary; then recover.
Reads `prune:`, the distillation loss settings, `seed` and `threads`.

Importance (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate
of ones multiplies each head's output and each FFN neuron; the expected |dL/dgate|
over training batches (L = the distillation loss) says how much the loss would move
if that unit were removed. Scores are L2-normalised per layer, then ranked globally,
so a layer may lose more heads than another - or all of them (the architecture keeps
the residual path). `magnitude` (weight norms) is the data-free alternative. The scores
are their own stage (`importance`), shared with the budget search.

Width (`prune.hidden`): one gate per hidden dimension, shared by every module that writes the
residual stream, is scored the same way; the best dimensions stay in whole head widths, in every
table, projection and LayerNorm (edgepipe.arch `keep_hidden`), each LayerNorm's weight scaled by the
measured spread of the kept dimensions (`norm_gains`).

Vocabulary: the architecture's tokenizer family decides what stays (edgepipe.arch).
"""

from __future__ import annotations

import math
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepipe.config import DistillConfig, PruneConfig
from edgepipe.errors import ConfigError
from edgepipe.model.int4 import int4_tables
from edgepipe.model.load import Tokenizer
from edgepipe.model.surgery import apply_plan, shape_of
from edgepipe.model.task_model import TaskModel, load_model, save_model
from edgepipe.model.train import (
    batches,
    distillation_objective,
    fit,
    forward,
    predict,
    schedule,
    seed_everything,
    validation,
)
from edgepipe.pipeline.data import Dataset
from edgepipe.pipeline.distill import SoftTargets
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import stable_hash
from edgepipe.stages import Record, Result, Stages
from edgepipe.tokenized import TokenizedData, TokenizedSplit

PRUNED_DIR = "pruned"

# -- importance ---------------------------------------------------------------


class Gates:
    """Multiplicative gates on head outputs and FFN neurons, installed as forward pre-hooks on the
    projections that read them (the architecture names those)."""

    def __init__(
        self,
        model: TaskModel,
        heads: list[torch.Tensor] | None = None,
        ffn: list[torch.Tensor] | None = None,
        hidden: torch.Tensor | None = None,
    ):
        arch = model.arch
        layers = arch.layers(model.encoder)
        self.heads = heads or [torch.ones(arch.head_count(layer)) for layer in layers]
        self.ffn = ffn or [torch.ones(arch.ffn_count(layer)) for layer in layers]
        # one gate per hidden dimension, shared by every module writing the residual stream: closing it
        # removes that dimension everywhere, as cutting the width does
        self.hidden = hidden
        d = model.dims.head_dim
        self._handles = []
        for layer, hg, fg in zip(layers, self.heads, self.ffn):
            if (o := arch.attention_output(layer)) is not None:
                self._handles.append(o.register_forward_pre_hook(lambda m, a, g=hg: (a[0] * g.repeat_interleave(d),)))
            if (down := arch.ffn_output(layer)) is not None:
                self._handles.append(down.register_forward_pre_hook(lambda m, a, g=fg: (a[0] * g,)))
        if hidden is not None:
            for writer in arch.residual_writers(model.encoder):
                self._handles.append(writer.register_forward_hook(lambda m, a, out, g=hidden: out * g))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __enter__(self) -> Gates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def taylor_importance(
    model: TaskModel,
    train: TokenizedSplit,
    teacher_logits: torch.Tensor,
    loss_mod: torch.nn.Module,
    n_batches: int,
    batch_size: int,
    seed: int,
    progress: Progress = Silent(),
    width: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """E|dL/dgate| per head, per FFN neuron and per hidden dimension (None where the architecture cannot
    cut its width), over `n_batches` shuffled training batches."""
    seed_everything(seed)
    model.eval()  # no dropout: the scores describe the deployed function
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    arch = model.arch
    layers = arch.layers(model.encoder)
    scored = width and arch.residual_writers(model.encoder)
    width = torch.ones(model.dims.hidden, requires_grad=True) if scored else None
    gates = Gates(
        model,
        [torch.ones(arch.head_count(layer), requires_grad=True) for layer in layers],
        [torch.ones(arch.ffn_count(layer), requires_grad=True) for layer in layers],
        width,
    )
    widths = [] if width is None else [width]
    head_acc = [torch.zeros_like(g) for g in gates.heads]
    ffn_acc = [torch.zeros_like(g) for g in gates.ffn]
    hidden_acc = [torch.zeros_like(g) for g in widths]
    order = np.random.default_rng(seed).permutation(len(train))[: n_batches * batch_size]
    total = math.ceil(len(order) / batch_size)
    try:
        with gates:
            for idx, b in progress.track(batches(train, batch_size, order), total, "importance (Taylor)"):
                loss = loss_mod(forward(model, b), teacher_logits[torch.from_numpy(idx)], b["labels"])["loss"]
                grads = torch.autograd.grad(loss, [*gates.heads, *gates.ffn, *widths], allow_unused=True)
                for acc, g in zip([*head_acc, *ffn_acc, *hidden_acc], grads):
                    if g is not None:
                        acc += g.abs()
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
    hidden = hidden_acc[0].numpy() / total if hidden_acc else None
    return [a.numpy() / total for a in head_acc], [a.numpy() / total for a in ffn_acc], hidden


def magnitude_hidden(model: TaskModel) -> np.ndarray | None:
    """Data-free width scores: every residual writer's gain (a LayerNorm's |weight|, a projection's row norms)."""
    writers = model.arch.residual_writers(model.encoder)
    if not writers:
        return None
    rows = [w.weight.detach().abs() if w.weight.dim() == 1 else w.weight.detach().norm(dim=1) for w in writers]
    return torch.stack(rows).sum(0).numpy()


def magnitude_importance(model: TaskModel) -> tuple[list[np.ndarray], list[np.ndarray]]:
    arch = model.arch
    heads, ffn = [], []
    d = model.dims.head_dim
    for layer in arch.layers(model.encoder):
        n = arch.head_count(layer)
        if n:
            q, k, v, o = arch.attention_weights(layer)
            w = torch.cat([q, k, v, o.T], dim=1)  # [n*d, 4*hidden]
            heads.append(w.detach().reshape(n, d, -1).norm(dim=(1, 2)).numpy())
        else:
            heads.append(np.zeros(0, dtype=np.float32))
        if arch.ffn_count(layer):
            up, down = arch.ffn_weights(layer)
            ffn.append((up.detach().norm(dim=1) * down.detach().norm(dim=0)).numpy())
        else:
            ffn.append(np.zeros(0, dtype=np.float32))
    return heads, ffn


@dataclass
class Importance:
    """Per-layer head and FFN-neuron scores (higher = more needed)."""

    heads: list[np.ndarray]
    ffn: list[np.ndarray]
    key: str
    hidden: np.ndarray | None = None  # per hidden dimension; None: the architecture cannot cut its width


def needs_importance(cfg: PruneConfig) -> bool:
    """Whether anything structural is to be removed (heads, neurons, layers): else ranking them is moot."""
    return bool(cfg.heads or cfg.ffn or cfg.layers or cfg.hidden or cfg.target_params)


def uniform_importance(student: TaskModel) -> Importance:
    """Equal scores, for a prune that removes no structure (the importance stage then does not run)."""
    shape = shape_of(student.arch, student.encoder)
    return Importance(
        [np.ones(h, np.float32) for h in shape["heads"]],
        [np.ones(f, np.float32) for f in shape["ffn"]],
        "uniform:" + stable_hash(shape),
        np.ones(student.dims.hidden, np.float32),
    )


def importance(
    ctx: Stages,
    *,
    student: TaskModel,
    soft_targets: SoftTargets,
    data: TokenizedData,
    method: str,
    batches: int,
    distill: DistillConfig,
    seed: int,
    threads: int,
    width: bool = False,
) -> Result:
    """The importance stage: scores of the student, for the prune stage and the budget search; with
    `width` (prune.hidden), of every hidden dimension too."""
    if method == "magnitude":
        heads, ffn = magnitude_importance(student)
        hidden = magnitude_hidden(student) if width else None
    else:
        loss_mod = student.task.distillation_loss(distill.temperature, distill.alpha)
        heads, ffn, hidden = taylor_importance(
            student,
            data.transfer,
            soft_targets.logits,
            loss_mod,
            batches,
            distill.batch_size,
            seed,
            ctx.progress,
            width,
        )
    result = {"heads": [h.tolist() for h in heads], "ffn": [f.tolist() for f in ffn]}
    if hidden is not None:
        result["hidden"] = hidden.tolist()
    return result, []


def load_importance(record: Record) -> Importance:
    r = record.result
    return Importance(
        [np.asarray(h, dtype=np.float32) for h in r["heads"]],
        [np.asarray(f, dtype=np.float32) for f in r["ffn"]],
        record.key,
        np.asarray(r["hidden"], dtype=np.float32) if "hidden" in r else None,
    )


# -- selection ----------------------------------------------------------------

# The default width cut: 384 -> 256 on the built-in MiniLM. Measured there (x86, 1 thread, seq 64; README
# "Width"): int8 ONNX 6.2 -> 4.3 MB, 1.24 -> 1.09 ms; test accuracy 82.5 -> 80.0 % after two recovery
# epochs (79.5 % after one; the validation curve was still rising).
WIDTH_CUT = 1 / 3


def width_defaults(model: TaskModel) -> dict[str, Any]:
    """prune.hidden (and the longer recovery a width cut needs) where nobody set them: only for an
    architecture that can cut its width and a task whose head reads the hidden state through a linear
    layer (an embedding model's output *is* the hidden state)."""
    if model.arch.residual_writers(model.encoder) and isinstance(model.head, nn.Linear):
        return {"prune.hidden": WIDTH_CUT, "prune.recovery_epochs": 2.0}
    return {}


def _normalised(scores: list[np.ndarray]) -> list[np.ndarray]:
    return [s / (np.linalg.norm(s) + 1e-12) if s.size else s for s in scores]


def _keep_top(scores: list[np.ndarray], remove_fraction: float) -> list[list[int]]:
    """Global ranking of per-layer-normalised scores; the lowest `remove_fraction` go."""
    flat = [(float(v), li, i) for li, s in enumerate(_normalised(scores)) for i, v in enumerate(s)]
    n_remove = int(round(remove_fraction * len(flat)))
    removed = {(li, i) for _, li, i in sorted(flat)[:n_remove]}
    return [[i for i in range(len(s)) if (li, i) not in removed] for li, s in enumerate(scores)]


def non_embedding_params(hidden: int, head_dim: int, heads: list[int], ffn: list[int]) -> int:
    """Attention (Q,K,V,O + biases) and FFN parameters, LayerNorms included."""
    total = 0
    for h, f in zip(heads, ffn):
        w = h * head_dim
        total += 4 * hidden * w + 3 * w + hidden + 2 * hidden  # QKV+O weights, QKV bias, O bias, LayerNorm
        total += 2 * hidden * f + f + hidden + 2 * hidden
    return total


def keep_width(scores: np.ndarray, remove_fraction: float, head_dim: int) -> list[int]:
    """The hidden dimensions that stay: the best-scored, as many as whole heads' widths that are nearest
    to removing `remove_fraction` (the config keeps hidden = heads x head size), at least one head's."""
    n_keep = max(1, round(len(scores) * (1 - remove_fraction) / head_dim)) * head_dim
    return sorted(np.argsort(-scores, kind="stable")[:n_keep].tolist())


def select(
    head_scores: list[np.ndarray],
    ffn_scores: list[np.ndarray],
    cfg: PruneConfig,
    hidden: int,
    head_dim: int,
    hidden_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Which layers, heads, neurons and (with prune.hidden) hidden dimensions survive."""
    width = None
    if cfg.hidden:
        if hidden_scores is None:
            raise ConfigError(
                "prune.hidden: this architecture cannot cut its hidden width (bert, roberta, xlm-roberta and "
                "electra can); set prune.hidden=0"
            )
        width = keep_width(hidden_scores, cfg.hidden, head_dim)
        hidden = len(width)
    n_layers = len(head_scores)
    layer_score = [float(h.sum() + f.sum()) for h, f in zip(head_scores, ffn_scores)]
    kept_layers = sorted(np.argsort(layer_score)[cfg.layers :].tolist()) if cfg.layers else list(range(n_layers))
    hs = [head_scores[i] for i in kept_layers]
    fs = [ffn_scores[i] for i in kept_layers]
    head_ratio, ffn_ratio = cfg.heads, cfg.ffn

    def params_at(ratio: float) -> int:
        return non_embedding_params(
            hidden, head_dim, [len(k) for k in _keep_top(hs, ratio)], [len(k) for k in _keep_top(fs, ratio)]
        )

    if cfg.target_params is not None:
        lo, hi = 0.0, 0.99
        if params_at(hi) > cfg.target_params:
            raise ConfigError(f"prune.target_params={cfg.target_params} is below what 99% pruning reaches; raise it")
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if params_at(mid) > cfg.target_params else (lo, mid)
        head_ratio = ffn_ratio = hi
    heads, ffn = _keep_top(hs, head_ratio), _keep_top(fs, ffn_ratio)
    if sum(map(len, heads)) == 0:
        raise ConfigError(f"pruning would remove every attention head (ratio {head_ratio:.2f}); lower prune.heads")
    if sum(map(len, ffn)) == 0:
        raise ConfigError(f"pruning would remove every FFN neuron (ratio {ffn_ratio:.2f}); lower prune.ffn")
    plan = {"layers": kept_layers, "heads": heads, "ffn": ffn, "head_ratio": head_ratio, "ffn_ratio": ffn_ratio}
    if width is not None:
        plan |= {"hidden": width, "norm_gain": [1.0] * (1 + 2 * len(kept_layers))}
    return plan


def spread_ratio(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per vector of the last axis: the standard deviation of the kept dimensions over that of all."""
    return x[..., index].std(-1) / x.std(-1).clamp_min(1e-12)


@torch.no_grad()
def norm_gains(
    model: TaskModel, train: TokenizedSplit, dims: list[int], n_batches: int, batch_size: int
) -> list[float]:
    """Per residual writer, E[spread of the kept dimensions / spread of all] of a LayerNorm's input over real
    tokens: a LayerNorm over fewer dimensions divides by their own spread, so its weight is scaled by
    this to keep its outputs' size (Samragh et al. 2023, "Weight subcloning", scale LayerNorm by the
    ratio of spreads; measured here instead of assumed). A projection writer (ELECTRA) gets 1."""
    writers = model.arch.residual_writers(model.encoder)
    index = torch.tensor(dims)
    sums = [0.0] * len(writers)
    count = 0
    mask: list[torch.Tensor] = []

    def record(i: int):
        def hook(module, args):
            sums[i] += float(spread_ratio(args[0], index)[mask[0]].sum())

        return hook

    handles = [w.register_forward_pre_hook(record(i)) for i, w in enumerate(writers) if isinstance(w, nn.LayerNorm)]
    model.eval()
    try:
        for _, b in batches(train, batch_size, np.arange(min(len(train), n_batches * batch_size))):
            mask[:] = [b["attention_mask"].bool()]
            forward(model, b)
            count += int(mask[0].sum())
    finally:
        for h in handles:
            h.remove()
    return [round(sums[i] / count, 6) if isinstance(w, nn.LayerNorm) and count else 1.0 for i, w in enumerate(writers)]


def prune_structure(
    student: TaskModel, scores: Importance, cfg: PruneConfig, train: TokenizedSplit | None = None, batch_size: int = 32
) -> tuple[TaskModel, dict[str, Any]]:
    """Structured pruning (no vocabulary change): the smaller model and the plan. A width cut measures its
    LayerNorm gains on `train` (when given)."""
    d = student.dims
    plan = select(scores.heads, scores.ffn, cfg, d.hidden, d.head_dim, scores.hidden)
    if "hidden" in plan and train is not None:
        kept = apply_plan(student, {k: v for k, v in plan.items() if k not in ("hidden", "norm_gain")})
        plan["norm_gain"] = norm_gains(kept, train, plan["hidden"], n_batches=20, batch_size=batch_size)
    pruned = apply_plan(student, plan)
    return pruned, {
        "importance": cfg.importance,
        "kept_layers": plan["layers"],
        "heads_kept": [len(h) for h in plan["heads"]],
        "ffn_kept": [len(f) for f in plan["ffn"]],
        "head_ratio": plan["head_ratio"],
        "ffn_ratio": plan["ffn_ratio"],
        "head_scores": [np.asarray(s).round(6).tolist() for s in scores.heads],
        "hidden_kept": len(plan.get("hidden", range(d.hidden))),
        **({"hidden_ratio": cfg.hidden, "norm_gain": plan["norm_gain"]} if "hidden" in plan else {}),
        "shape": shape_of(pruned.arch, pruned.encoder),
    }


# -- recovery and the stage ----------------------------------------------------------


def recover(
    model: TaskModel,
    soft_targets: torch.Tensor,
    train: TokenizedSplit,
    val: TokenizedSplit,
    cfg: PruneConfig,
    distill: DistillConfig,
    seed: int,
    progress: Progress = Silent(),
    int4_grid: bool = False,
) -> dict[str, Any]:
    """Distil again from the teacher's soft targets (over the transfer set `train`) so the pruned
    model regains accuracy; validated and stopped as distillation is (distill.*). With `int4_grid`
    (quantize.embedding: int4) the embedding tables train through their 4-bit grid and stay on it."""
    if cfg.recovery_epochs == 0 and not cfg.recovery_max_steps:
        return {"steps": 0}
    loss_fn = distillation_objective(model.task.distillation_loss(distill.temperature, distill.alpha), soft_targets)
    settings = schedule(
        distill,
        cfg.recovery_lr,
        distill.batch_size,
        epochs=max(cfg.recovery_epochs, 1e-9),
        min_steps=cfg.recovery_min_steps,
        max_steps=cfg.recovery_max_steps,
        keep_start=True,  # the pruned model before recovery is a model too
    )
    with int4_tables(model) if int4_grid else nullcontext([]) as tables:
        report = fit(
            model,
            train,
            loss_fn,
            settings,
            seed=seed + 1,
            progress=progress,
            description="recover pruned",
            validate=validation(val, distill.validation_examples),
        )
    return report | ({"int4_tables": [t.weight.shape[0] for t in tables]} if int4_grid else {})


def run(
    ctx: Stages,
    *,
    student: TaskModel,
    scores: Importance,
    soft_targets: SoftTargets,
    dataset: Dataset,
    tokenizer: Tokenizer,
    prune: PruneConfig,
    distill: DistillConfig,
    max_length: int,
    seed: int,
    threads: int,
    embedding: str = "int8",
) -> Result:
    """The stage (every training process runs it): structured pruning, vocabulary pruning, recovery
    (through the 4-bit table grid when `embedding`, quantize.embedding, is int4); the pruned model
    saved with its tokenizer (rank 0 writes)."""
    out_dir = ctx.path(PRUNED_DIR)
    student_data = dataset.tokenize(tokenizer.hf, max_length)  # the pruned model's too, unless its vocabulary is cut
    train = student_data.transfer if prune.hidden else None
    pruned, report = prune_structure(student, scores, prune, train, distill.batch_size or 32)
    new_tokenizer = tokenizer.hf
    if prune.vocab:
        vocab_dir = (
            out_dir if ctx.dist.main else Path(tempfile.mkdtemp(prefix="edgepipe-vocab-"))
        )  # other ranks need the tokenizer only
        vocab = pruned.arch.prune_vocabulary(
            tokenizer.hf, dataset.flat_texts("train") + dataset.extra, tokenizer.directory, vocab_dir
        )
        pruned.arch.keep_tokens(pruned.encoder, vocab.kept_ids)
        new_tokenizer = vocab.tokenizer
        test_ids = tokenizer(dataset.flat_texts("test"), add_special_tokens=False)["input_ids"]
        kept = set(vocab.kept_ids)
        n_tok = sum(map(len, test_ids))
        report["vocab"] = {
            "original": vocab.original_size,
            "kept": len(vocab.kept_ids),
            "test_tokens_outside_kept": round(sum(t not in kept for ids in test_ids for t in ids) / max(1, n_tok), 5),
        }
    data = dataset.tokenize(new_tokenizer, max_length) if prune.vocab else student_data
    task = pruned.task
    before = {split: task.score(predict(pruned, data[split]), data[split].labels) for split in ("val", "test")}
    report[f"{task.metric}_before_recovery"] = before["test"]
    report[f"val_{task.metric}_before_recovery"] = before["val"]
    if report["shape"] == shape_of(student.arch, student.encoder) and not prune.vocab:
        # the same model as the student: recovery could only move it away from what it already is
        report["recovery"] = {"steps": 0, "skipped": "nothing was pruned"}
    else:
        report["recovery"] = recover(
            pruned,
            soft_targets.logits,
            data.transfer,
            data.val,
            prune,
            distill,
            seed,
            ctx.progress,
            embedding == "int4",
        )
    if not ctx.dist.main:
        return report, []
    files = save_model(pruned, out_dir, tokenizer_dir=None if prune.vocab else tokenizer.directory)
    if prune.vocab:
        files += [out_dir / name for name in pruned.arch.tokenizer_files if (out_dir / name).is_file()]
    return report, files


def load(ctx: Stages, record: Record) -> TaskModel:
    return load_model(ctx.path(PRUNED_DIR), key=record.key)
