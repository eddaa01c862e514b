"""Typed user-facing failures: the CLI turns each into one line and a non-zero exit.

Every message says what is wrong and how to fix it. Anything that is *not* one of
these is a bug in edgepipe and keeps its traceback.
"""


class EdgepipeError(Exception):
    """Base class; `exit_code` lets scripts tell the kinds apart."""

    kind = "error"
    exit_code = 2


class ConfigError(EdgepipeError):
    kind = "config"
    exit_code = 2


class DataError(EdgepipeError):
    kind = "data"
    exit_code = 3


class ModelError(EdgepipeError):
    kind = "model"
    exit_code = 4


class ExportParityError(EdgepipeError):
    kind = "export"
    exit_code = 5


class DeviceError(EdgepipeError):
    kind = "device"
    exit_code = 6


class RunDirError(EdgepipeError):
    """The output directory cannot be used (unwritable, a file, locked by another run)."""

    kind = "output"
    exit_code = 7


class BudgetError(EdgepipeError):
    """No plan in the search space meets the requested latency/size/accuracy budget."""

    kind = "budget"
    exit_code = 8

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report  # what the search measured, kept in the manifest


class BaselineError(EdgepipeError):
    """The teacher is not clearly better than predicting without a model: distilling it would ship that."""

    kind = "baseline"
    exit_code = 9


class ComparisonError(EdgepipeError):
    """Two runs' numbers cannot be compared (nothing in common, or measured under different conditions)."""

    kind = "compare"
    exit_code = 10


def require_installed(module: str, missing: EdgepipeError) -> None:
    """Raises `missing` unless `module` can be found, without importing it (the optional exporters' imports
    cost seconds and log noise; a broken parent package makes `find_spec` itself raise)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise missing
