"""The one training loop and evaluation used by every stage that trains.

Reproducibility: the loop seeds torch (dropout) and draws the batch order from its
own numpy generator; with the same thread count, two runs are bit-identical.
Batches are trimmed to their longest example, so padding to `max_length` costs
nothing in training.
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

from edgepipe.progress import Progress, Silent
from edgepipe.pipeline.data import TokenizedSplit


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


def batches(split: TokenizedSplit, batch_size: int, order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(indices, tensors) per batch, trimmed to the longest real sequence in the batch."""
    order = np.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(1, int(split.attention_mask[idx].sum(axis=1).max()))
        yield idx, {
            "input_ids": torch.from_numpy(split.input_ids[idx, :width]),
            "attention_mask": torch.from_numpy(split.attention_mask[idx, :width]),
            "token_type_ids": torch.from_numpy(split.token_type_ids[idx, :width]),
            "labels": torch.from_numpy(split.labels[idx]),
        }


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
) -> dict:
    """AdamW with linear warm-up/decay; returns a small training report."""
    seed_everything(seed)
    steps = settings.total_steps(len(split))
    order = _shuffled(len(split), steps, settings.batch_size, np.random.default_rng(seed))
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(steps * settings.warmup_ratio))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for idx, batch in progress.track(batches(split, settings.batch_size, order), steps, description):
        loss = loss_fn(model, idx, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": steps,
        "examples_seen": int(steps * settings.batch_size),
        "final_loss": float(np.mean(tail)),
        "seconds": round(time.perf_counter() - t0, 2),
    }


@torch.no_grad()
def predict(model: nn.Module, split: TokenizedSplit, batch_size: int = 64, progress: Progress = Silent(), description: str = "evaluate") -> np.ndarray:
    model.eval()
    out = np.zeros((len(split), len(model.labels)), dtype=np.float32)
    total = math.ceil(len(split) / batch_size)
    for idx, b in progress.track(batches(split, batch_size), total, description):
        out[idx] = model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).numpy()
    return out


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())
