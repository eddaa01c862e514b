"""Tokenized data as every stage, exporter and runtime takes it: padded int64 arrays.

Core, not a stage: training, export examples, calibration, evaluation and the device
runner's input files all read these arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from edgepipe.rundir import atomic_path

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
SPLITS = ("train", "val", "test")


@dataclass
class TokenizedSplit:
    """Padded arrays as the exported models take them (int64, [N, max_length]); labels [N]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
            "labels": self.labels,
        }

    def inputs(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in INPUTS}

    def head(self, n: int) -> TokenizedSplit:
        """The first `n` examples."""
        return TokenizedSplit(*(a[:n] for a in (self.input_ids, self.attention_mask, self.token_type_ids, self.labels)))

    def with_ids_below(self, rows: int) -> TokenizedSplit:
        """Ids valid for a model with `rows` vocabulary rows (for latency, which does not depend on which ids)."""
        return TokenizedSplit(
            np.minimum(self.input_ids, rows - 1), self.attention_mask, self.token_type_ids, self.labels
        )

    def save(self, directory: Path) -> list[Path]:
        """One .npy per array: what a device-side runner reads with numpy alone."""
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, arr in self.arrays().items():
            path = directory / f"{name}.npy"
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
            paths.append(path)
        return paths

    @staticmethod
    def concat(a: TokenizedSplit, b: TokenizedSplit) -> TokenizedSplit:
        return TokenizedSplit(*(np.concatenate([x, y]) for x, y in zip(a.arrays().values(), b.arrays().values())))


UNLABELED = -1  # the label of a text the student learns from the teacher alone (augmented, user-supplied)


@dataclass
class TokenizedData:
    """train/val/test of one tokenizer, with a content key that stage keys build on.

    `transfer` is what the student learns from the teacher on: the labelled training split, then
    texts without labels (label UNLABELED) when small-data distillation adds them; the teacher's
    soft targets have one row per transfer example."""

    train: TokenizedSplit
    val: TokenizedSplit
    test: TokenizedSplit
    key: str
    extra: TokenizedSplit | None = None

    @classmethod
    def of(cls, splits: dict[str, TokenizedSplit]) -> TokenizedData:
        h = hashlib.sha256()
        for name in sorted(splits):
            for arr in splits[name].arrays().values():
                h.update(arr.tobytes())
        return cls(splits["train"], splits["val"], splits["test"], h.hexdigest(), splits.get("extra"))

    @cached_property
    def transfer(self) -> TokenizedSplit:
        return (
            self.train if self.extra is None or not len(self.extra) else TokenizedSplit.concat(self.train, self.extra)
        )

    def __getitem__(self, split: str) -> TokenizedSplit:
        return getattr(self, split)
