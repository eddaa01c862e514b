"""Tasks, keyed by name: one module per task (sequence classification first).

Every module of this folder is imported here, so dropping a file in registers it.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgepipe.errors import ConfigError
from edgepipe.tasks.base import TASKS, Task

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "losses"):
        importlib.import_module(f"{__name__}.{_module.name}")

DEFAULT = "sequence_classification"


def get(name: str | None) -> Task:
    if (name or DEFAULT) not in TASKS:
        raise ConfigError(f"unknown task {name!r}; edgepipe knows {', '.join(sorted(TASKS))}")
    return TASKS[name or DEFAULT]


__all__ = ["DEFAULT", "TASKS", "Task", "get"]
