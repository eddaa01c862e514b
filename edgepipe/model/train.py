"""The one training loop and evaluation used by every stage that trains.

Reproducibility: the loop seeds torch (dropout) and draws the batch order from its
own numpy generator; with the same thread count, two runs are bit-identical.
Batches are trimmed to their longest example, so padding to `max_length` costs
nothing in training.

Under `torchrun`/`accelerate launch` (see edgepipe.distributed) every rank draws the same
global batches, trains on its share, and gradients are summed across ranks with each
share's loss weighted by its size: the update is the one-process update of the same
global batch, up to float summation order (and dropout masks, which differ per share, and the
task loss's mean over labelled rows, which each share takes over its own rows when texts without
labels are mixed in: small-data distillation).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgepipe import distributed
from edgepipe.errors import ConfigError
from edgepipe.progress import Progress, Silent
from edgepipe.tokenized import TokenizedSplit


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


@dataclass(frozen=True)
class TrainSettings:
    """A schedule in optimizer steps: `epochs` of the training set, but never fewer than `min_steps`
    (small data: 500 examples at batch 16 are 32 steps an epoch, far from converged) and never more
    than `max_steps`. The learning rate warms up, then decays linearly over the planned steps.

    With a `validate` function, `fit` evaluates `evaluations` times over the plan, keeps the best
    checkpoint, and stops once `patience` evaluations in a row brought no improvement - never
    before `min_steps`. With `keep_start` the weights training starts from are validated too and
    kept if nothing beats them: a student that is already a working model (cut from the teacher,
    or pruned) must not come out worse. Measured: all-MiniLM-L6-v2 copied whole (cosine 0.99995
    to the teacher after a no-op prune) fell to 0.947 after one recovery step at lr 1e-4 -
    AdamW's first step moves every weight by ~lr whatever the gradient's size."""

    epochs: float
    lr: float
    batch_size: int
    max_steps: int | None = None
    min_steps: int = 0
    evaluations: int = 0
    patience: int | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    group_by_length: bool = False
    keep_start: bool = False

    def total_steps(self, n_examples: int) -> int:
        """The planned steps: epochs, raised to the floor, capped by `max_steps` (the cap wins)."""
        steps = max(1, math.ceil(math.ceil(n_examples / self.batch_size) * self.epochs), self.min_steps)
        return min(steps, self.max_steps) if self.max_steps else steps

    def evaluation_steps(self, steps: int) -> list[int]:
        """The steps after which validation runs: evenly spaced, the last one included."""
        if self.evaluations <= 0:
            return []
        n = min(self.evaluations, steps)
        return sorted({max(1, round(steps * (i + 1) / n)) for i in range(n)})


def batches(
    split: TokenizedSplit, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(indices, tensors) per batch, trimmed to the longest real sequence in the batch."""
    order = np.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(1, int(split.attention_mask[idx].sum(axis=1).max()))
        yield (
            idx,
            {
                "input_ids": torch.from_numpy(split.input_ids[idx, :width]),
                "attention_mask": torch.from_numpy(split.attention_mask[idx, :width]),
                "token_type_ids": torch.from_numpy(split.token_type_ids[idx, :width]),
                "labels": torch.from_numpy(split.labels[idx]),
            },
        )


MEGABATCH = 50  # batches per length-sorted group (transformers' LengthGroupedSampler uses 50 too)


def grouped_by_length(order: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """`order` cut into runs of MEGABATCH batches; each run sorted by length and cut into batches,
    whose order within the run is shuffled again. Every batch then holds texts of similar length,
    so trimming it to its longest text pads little (random batches of the built-in data pad ~27
    real tokens to ~60); which texts share a run stays random. Opt-in (`group_by_length`): on the
    built-in task the teacher kept its accuracy (82.3 vs 82.4 %) but the distilled student lost 1.9
    points (80.9 vs 82.8 %; its validation curve peaked at step 152 of 305, then fell)."""
    step = batch_size * MEGABATCH
    out = []
    for start in range(0, len(order), step):
        run = order[start : start + step]
        run = run[np.argsort(-lengths[run], kind="stable")]
        chunks = [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
        out.extend(chunks[i] for i in rng.permutation(len(chunks)))
    return np.concatenate(out) if out else order


def _shuffled(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Enough epochs of permutations to cover `steps` batches."""
    need = steps * batch_size
    perms = [rng.permutation(n) for _ in range(math.ceil(need / n))]
    return np.concatenate(perms)[:need]


LossFn = Callable[[nn.Module, np.ndarray, dict[str, torch.Tensor]], torch.Tensor]


Validate = Callable[[nn.Module], float]


def fit(
    model: nn.Module,
    split: TokenizedSplit,
    loss_fn: LossFn,
    settings: TrainSettings,
    seed: int,
    progress: Progress = Silent(),
    description: str = "train",
    params: list[nn.Parameter] | None = None,
    data_parallel: bool = True,
    validate: Validate | None = None,
) -> dict:
    """AdamW with linear warm-up/decay; returns a small training report.

    `validate(model)` (the task metric on validation, higher is better) is called at the
    settings' evaluation steps; the model ends with the weights of the best evaluation, and the
    report carries the curve. `data_parallel=False` trains on this process alone even inside a
    process group (the budget search's estimates run on rank 0 only)."""
    seed_everything(seed)
    dist = distributed.current() if data_parallel else distributed.SINGLE
    if settings.batch_size < dist.world:
        raise ConfigError(
            f"batch size {settings.batch_size} is smaller than the {dist.world} training processes; raise it or start fewer"
        )
    steps = settings.total_steps(len(split))
    checks = set(settings.evaluation_steps(steps)) if validate is not None else set()
    rng = np.random.default_rng(seed)
    order = _shuffled(len(split), steps, settings.batch_size, rng)
    if settings.group_by_length:
        order = grouped_by_length(order, split.attention_mask.sum(axis=1), settings.batch_size, rng)
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    distributed.sync_parameters(params, dist)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(steps * settings.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    model.train()
    losses: list[float] = []
    curve: list[list[float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    stale = 0
    validation_seconds = 0.0
    t0 = time.perf_counter()
    if checks and settings.keep_start:
        score = float(dist.broadcast(validate(model)))
        model.train()
        curve.append([0, round(score, 6)])
        best = (score, 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
        validation_seconds += time.perf_counter() - t0
    global_batches = (order[s : s + settings.batch_size] for s in range(0, len(order), settings.batch_size))
    for step, global_idx in enumerate(progress.track(global_batches, steps, description), 1):
        idx, batch = next(batches(split, len(global_idx), distributed.shard(global_idx, dist)))
        share = len(idx) / len(global_idx)
        loss = loss_fn(model, idx, batch)
        opt.zero_grad(set_to_none=True)
        (loss * share).backward()
        distributed.average_gradients(params, dist)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(distributed.all_sum(float(loss.detach()) * share, dist))
        if step not in checks:
            continue
        t_val = time.perf_counter()
        score = float(dist.broadcast(validate(model)))  # every rank keeps the same checkpoint
        validation_seconds += time.perf_counter() - t_val
        model.train()
        curve.append([step, round(score, 6)])
        # a tie keeps the later (longer trained) checkpoint, but only a better score resets patience
        stale = 0 if best is None or score > best[0] else stale + 1
        if best is None or score >= best[0]:
            best = (score, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        if settings.patience and stale >= settings.patience and step >= settings.min_steps and step < steps:
            break
    model.eval()
    if best is not None and best[1] != len(losses):
        model.load_state_dict(best[2])
    calibration = validate.finish(model) if isinstance(validate, Validation) else None
    tail = losses[-max(1, len(losses) // 10) :]
    report = {
        "steps": len(losses),
        "planned_steps": steps,
        "examples_seen": int(len(losses) * settings.batch_size),
        "final_loss": float(np.mean(tail)),
        "seconds": round(time.perf_counter() - t0, 2),
        **({"processes": dist.world} if dist.active else {}),
    }
    if best is not None:
        report |= {
            "curve": curve,
            "best_step": best[1],
            "best_val": best[0],
            "validation_seconds": round(validation_seconds, 2),  # included in `seconds`
        }
        if len(losses) < steps:
            report["stopped_early"] = f"no better validation for {settings.patience} evaluations"
    if calibration is not None:
        report["calibration"] = calibration
    return report


def forward(model: nn.Module, batch: dict[str, torch.Tensor], **kwargs):
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], **kwargs)


@torch.no_grad()
def predict(
    model: nn.Module,
    split: TokenizedSplit,
    batch_size: int = 64,
    progress: Progress = Silent(),
    description: str = "evaluate",
) -> np.ndarray:
    """The model's outputs (logits) on every example, in eval mode. Batches are drawn in order of
    length (each trimmed to its longest text), so short texts are not padded to the longest of a
    random batch: the teacher's soft targets on the built-in data took 113 s in input order."""
    model.eval()
    out: np.ndarray | None = None
    total = math.ceil(len(split) / batch_size)
    by_length = np.argsort(split.attention_mask.sum(axis=1), kind="stable")
    for idx, b in progress.track(batches(split, batch_size, by_length), total, description):
        y = forward(model, b).numpy()
        if y.ndim == 3:  # per-token outputs of a trimmed batch: back to the split's length (zeros = padding)
            y = np.pad(y, ((0, 0), (0, split.input_ids.shape[1] - y.shape[1]), (0, 0)))
        if out is None:
            out = np.zeros((len(split), *y.shape[1:]), dtype=np.float32)
        out[idx] = y
    return out if out is not None else np.zeros((0,), dtype=np.float32)


def distillation_objective(loss_mod: nn.Module, soft_targets: torch.Tensor) -> LossFn:
    """The loss of training on the teacher's precomputed outputs (`soft_targets`, one row per
    training example): distillation, pruning recovery, the budget search's estimates, importance."""

    def loss_fn(model: nn.Module, idx: np.ndarray, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return loss_mod(forward(model, batch), soft_targets[torch.from_numpy(np.asarray(idx))], batch["labels"])["loss"]

    return loss_fn


def schedule(section, lr: float, batch_size: int, **overrides) -> TrainSettings:
    """The TrainSettings of a config section with a schedule (edgepipe.config._Schedule)."""
    if batch_size is None or lr is None:
        raise ConfigError("training settings left to the data size were not filled (edgepipe.config.for_data_size)")
    fields = {k: getattr(section, k) for k in ("epochs", "min_steps", "max_steps", "evaluations", "patience")}
    fields["group_by_length"] = bool(getattr(section, "group_by_length", False))
    return TrainSettings(lr=lr, batch_size=batch_size, **(fields | overrides))


class Validation:
    """The task metric of a model on the first `examples` of the validation split (the split is
    stratified, so its head keeps the label mix); what `fit` keeps the best checkpoint by. With
    decision settings to tune (multi-label thresholds), each check scores them tuned, and `finish`
    folds the tuned ones into the kept checkpoint (Task.calibrate)."""

    def __init__(self, val: TokenizedSplit, examples: int):
        self.subset = val.head(examples)

    def __call__(self, model: nn.Module) -> float:
        return model.task.tuned_score(predict(model, self.subset), self.subset.labels)

    def finish(self, model: nn.Module) -> dict | None:
        if not model.task.tunes_decisions:
            return None
        model.calibration = model.task.calibrate(model, predict(model, self.subset), self.subset.labels)
        return model.calibration


def validation(val: TokenizedSplit, examples: int) -> Validation:
    return Validation(val, examples)
