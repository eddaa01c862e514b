"""Resumable stages whose keys are derived from what they read.

A stage is a function `fn(ctx, **inputs) -> (result, files)`. Everything it reads comes in
as a keyword input, and its key is the hash of those inputs: settings (config sections and
values) by value, upstream results (a trained model, tokenized data, an artifact) by their
`key`. Nothing else reaches the function, so a setting it reads is a setting it is keyed
on: a changed setting reruns exactly what reads it, an unchanged one reuses the record
after its files pass a sha256 check (see edgepipe.rundir). A value that has neither a key
nor a plain value (a path, an array, a model without a key) is refused, not hashed by
accident.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel

from edgepipe.distributed import SINGLE, Dist
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import RunDir, stable_hash

Result = tuple[dict[str, Any], list[Path]]


class Record(NamedTuple):
    """A finished stage: what it reported, the key downstream stages build theirs on, and the
    files it wrote (run-dir-relative path -> sha256; the first is its artifact, if it has one)."""

    result: dict[str, Any]
    key: str
    files: dict[str, str]


class StageFn(Protocol):
    def __call__(self, ctx: Stages, /, **inputs: Any) -> Result: ...


def input_key(value: Any) -> Any:
    """What of an input goes into a stage key."""
    key = getattr(value, "key", None)
    if isinstance(key, str):
        return {"key": key}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [input_key(v) for v in value]
    if isinstance(value, dict):
        return {str(k): input_key(v) for k, v in value.items()}
    raise TypeError(
        f"a stage input of type {type(value).__name__} has no key: pass the settings or the keyed result it comes from"
    )


def derive_key(inputs: dict[str, Any]) -> str:
    return stable_hash({name: input_key(value) for name, value in inputs.items()})


class Stages:
    """Runs stages in a run dir and is the context each stage gets: where to write (`path`),
    how to report (`progress`), which process it is (`dist`), and `run` for stages of its own.

    With several training processes (edgepipe.distributed), `mode` says who runs a stage:
    "main": rank 0 computes and records, the others wait and read the record; "all": every rank
    computes (a training stage, keyed on the process count too), rank 0 records; "local": only
    the calling process, no waiting (rank-0-only work such as the budget search's estimates).
    """

    def __init__(self, rundir: RunDir, progress: Progress = Silent(), dist: Dist = SINGLE, timings: dict | None = None):
        self.rundir, self.progress, self.dist = rundir, progress, dist
        self.timings: dict[str, dict[str, Any]] = {} if timings is None else timings  # seconds and reuse per stage
        self._lock = threading.Lock()  # device workers run stages side by side

    def path(self, rel: str) -> Path:
        return self.rundir.path(rel)

    def rel(self, path: Path) -> str:
        return self.rundir.rel(path)

    def run(self, name: str, fn: StageFn, /, *, mode: str = "main", **inputs: Any) -> Record:
        """The stage's record when the derived key and its files match, else computed now."""
        # N-process training differs from 1-process training in float summation order
        processes = {"processes": self.dist.world} if mode == "all" and self.dist.active else {}
        key = derive_key(inputs | processes)
        result = self._run(name, key, lambda: fn(self, **inputs), mode)
        return Record(result, key, self.rundir.files_of(name))

    def _run(self, name: str, key: str, compute: Callable[[], Result], mode: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        d, rundir = self.dist, self.rundir
        if not d.active or mode == "local":
            result, reused = rundir.stage(name, key, compute)
        elif mode == "all":
            hit = rundir.cached(name, key) if d.main else None  # hashes the stage's files: once, on rank 0
            reused = d.broadcast(hit is not None)
            if reused:
                result = hit if d.main else rundir.cached(name, key)
            else:
                result, files = compute()
                if d.main:
                    rundir.record(name, key, result, files)
            d.barrier()
        else:
            if d.main:
                result, reused = rundir.stage(name, key, compute)
            d.barrier()
            if not d.main:
                result, reused = rundir.cached(name, key), True
        seconds = round(time.perf_counter() - t0, 2)
        with self._lock:
            self.timings[name] = {"seconds": seconds, "reused": reused}
        self.progress.log(
            f"[green]✓[/green] {name}" + (" [dim](reused)[/dim]" if reused else f" [dim]({seconds:.1f} s)[/dim]")
        )
        return result
