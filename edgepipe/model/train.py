"""The one training loop and evaluation used by every stage that trains.

Reproducibility: the loop seeds torch (dropout) and draws the batch order from its
own numpy generator; with the same thread count, two runs are bit-identical.
Batches are trimmed to their longest example, so padding to `max_length` costs
nothing in training.

Under `torchrun`/`accelerate launch` (see edgepipe.distributed) every rank draws the same
global batches, trains on its share, and gradients are summed across ranks with each
share's loss weighted by its size: the update is the one-process update of the same
global batch, up to float summation order (and dropout masks, which differ per share).
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
    epochs: float
    lr: float
    batch_size: int
    max_steps: int | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06

    def total_steps(self, n_examples: int) -> int:
        """As in HF Trainer: `max_steps`, when set, overrides `epochs`."""
        if self.max_steps:
            return self.max_steps
        return max(1, math.ceil(math.ceil(n_examples / self.batch_size) * self.epochs))


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


def _shuffled(n: int, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Enough epochs of permutations to cover `steps` batches."""
    need = steps * batch_size
    perms = [rng.permutation(n) for _ in range(math.ceil(need / n))]
    return np.concatenate(perms)[:need]


LossFn = Callable[[nn.Module, np.ndarray, dict[str, torch.Tensor]], torch.Tensor]


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
) -> dict:
    """AdamW with linear warm-up/decay; returns a small training report.

    `data_parallel=False` trains on this process alone even inside a process group (the budget
    search's estimates run on rank 0 only)."""
    seed_everything(seed)
    dist = distributed.current() if data_parallel else distributed.SINGLE
    if settings.batch_size < dist.world:
        raise ConfigError(
            f"batch size {settings.batch_size} is smaller than the {dist.world} training processes; raise it or start fewer"
        )
    steps = settings.total_steps(len(split))
    order = _shuffled(len(split), steps, settings.batch_size, np.random.default_rng(seed))
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    distributed.sync_parameters(params, dist)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(steps * settings.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    global_batches = (order[s : s + settings.batch_size] for s in range(0, len(order), settings.batch_size))
    for global_idx in progress.track(global_batches, steps, description):
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
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": steps,
        "examples_seen": int(steps * settings.batch_size),
        "final_loss": float(np.mean(tail)),
        "seconds": round(time.perf_counter() - t0, 2),
        **({"processes": dist.world} if dist.active else {}),
    }


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
    """The model's outputs (logits) on every example, in eval mode."""
    model.eval()
    out: np.ndarray | None = None
    total = math.ceil(len(split) / batch_size)
    for idx, b in progress.track(batches(split, batch_size), total, description):
        y = forward(model, b).numpy()
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
