"""Tasks, keyed by name: one module per task (sequence classification first).

Every module of this folder is imported here, so dropping a file in registers it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from edgepipe.errors import ConfigError
from edgepipe.tasks.base import TASKS, Task

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "losses"):
        importlib.import_module(f"{__name__}.{_module.name}")

DEFAULT = "sequence_classification"
AUTO = "auto"


def get(name: str | None) -> Task:
    if (name or DEFAULT) not in TASKS:
        raise ConfigError(f"unknown task {name!r}; edgepipe knows {', '.join(sorted(TASKS))} (or auto)")
    return TASKS[name or DEFAULT]


def resolve(
    requested: str, columns: Iterable[str], teacher_task: str | None = None, label_column: str = "label"
) -> Task:
    """The task of a run: the one asked for, or (`auto`) the teacher's trained head's, or the one the
    data file's columns say (text_a/text_b: pairs; labels: multi-label; text alone: embeddings), or
    sequence classification."""
    if requested != AUTO:
        return get(requested)
    if teacher_task is not None and teacher_task != DEFAULT:
        return get(teacher_task)
    have = set(columns)
    if have:
        for task in TASKS.values():
            if task.matches(have, label_column):
                return task
    return get(DEFAULT)


__all__ = ["AUTO", "DEFAULT", "TASKS", "Task", "get", "resolve"]
