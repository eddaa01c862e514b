"""How an artifact is measured on a device, and what a measurement returns: one contract for every device.

`Measurement` is all a device is given (not the whole bench config with its SSH and adb
settings); `to_argv` is the standalone runner's command line, the same on x86, a board
or a phone. `Measured` is the runner's JSON, typed; the LiteRT `benchmark_model` path
returns the same type with what that tool cannot report (p90/p99) left None.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Measurement(BaseModel):
    """The settings a measurement depends on: stage keys hash exactly these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(1, ge=1)
    seq_len: int | None = Field(
        64, ge=1, description="padded length of latency runs (a TFLite model's fixed length); None: the model's own"
    )
    batch: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=1)
    max_eval: int | None = Field(None, gt=0)
    pin_cores: str | None = None
    accuracy: bool = Field(True, description="also evaluate the task's metric on the eval inputs")
    metric: str = Field("accuracy", description="the task's metric, computed by the runner on the device")

    def to_argv(self) -> list[str]:
        """The runner's flags (after `runner.py --model M --inputs D`)."""
        argv = ["--threads", str(self.threads), "--warmup", str(self.warmup), "--runs", str(self.runs)]
        argv += ["--batch", str(self.batch), "--metric", self.metric] + (
            ["--seq-len", str(self.seq_len)] if self.seq_len else []
        )
        if not self.accuracy:
            argv += ["--no-accuracy"]
        elif self.max_eval:
            argv += ["--max-eval", str(self.max_eval)]
        return argv

    def pinned(self, argv: list[str]) -> list[str]:
        """`argv` under `taskset -c CORES` when cores are pinned."""
        return ["taskset", "-c", self.pin_cores, *argv] if self.pin_cores else argv

    def latency_only(self) -> Measurement:
        return self.model_copy(update={"accuracy": False, "max_eval": None})


class Latency(BaseModel):
    """Milliseconds per inference over the timed runs (the runner's LatencyStats)."""

    model_config = ConfigDict(extra="allow")

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    n: int = 0


class Measured(BaseModel):
    """One device measurement of one model file; unknown keys (a newer runner's) are kept."""

    model_config = ConfigDict(extra="allow")

    device: str | None = None
    device_info: dict[str, Any] | None = None
    model: str | None = None
    runtime: str
    runtime_version: str | None = None
    delegate: str | None = None
    threads: int
    seq_len: int
    batch: int
    latency_ms: Latency
    latency_samples_ms: list[float] | None = None
    metric: str | None = None
    metric_value: float | None = None
    accuracy: float | None = None
    n_eval: int = 0
    init_ms: float | None = None
    first_inference_ms: float | None = None
    peak_rss_mb: float | None = None
    emulated: str | None = None

    def get_extra(self, key: str) -> Any:
        """A runner key without a field of its own (machine, cpu, cpu_count, python, ...)."""
        return (self.model_extra or {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
