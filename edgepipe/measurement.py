"""How an artifact is measured on a device, and what a measurement returns: one contract for every device.

`Measurement` is all a device is given (not the whole bench config with its SSH and adb
settings); `to_argv` is the standalone runner's command line, the same on x86, a board
or a phone. `Measured` is the runner's JSON, typed; the LiteRT `benchmark_model` path
returns the same type with what that tool cannot report (p90/p99) left None.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ThermalSettings(BaseModel):
    """Heat: a cool-down before each artifact and the margin that flags a run as taken hot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cool_below_c: float | None = Field(
        None, description="wait before each artifact until the device's hottest sensor reads below this; None: no wait"
    )
    cool_timeout_s: float = Field(300, ge=0, description="give up waiting after this long (warn, measure, flag)")
    warm_margin_c: float = Field(
        5.0, ge=0, description="flag a result whose device ended warmer than it started by more than this"
    )


class EnergySettings(BaseModel):
    """Energy: power sampled during the timed runs, where the device has a sensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_hz: float = Field(10.0, ge=0, description="power readings per second; 0: no energy figure")
    seconds: float = Field(
        3.0, ge=0, description="back-to-back inferences this long, after the timed runs, where power can be read"
    )
    idle_s: float = Field(1.0, ge=0, description="seconds of idle power sampled before loading the model")
    external_meter: bool = Field(
        False, description="an external meter powers the device: battery readings stay valid while it is plugged in"
    )


class Measurement(BaseModel):
    """The settings a measurement depends on: stage keys hash exactly these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int = Field(1, ge=1)
    seq_len: int | None = Field(
        64,
        ge=0,
        description="padded length of latency runs (a TFLite model's fixed length or one of its length "
        "signatures); 0: each text at its own length; None: the model's own",
    )
    batch: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=1)
    max_eval: int | None = Field(None, gt=0)
    pin_cores: str | None = None
    accuracy: bool = Field(True, description="also evaluate the task's metric on the eval inputs")
    metric: str = Field("accuracy", description="the task's metric, computed by the runner on the device")
    thermal: ThermalSettings = ThermalSettings()
    energy: EnergySettings = EnergySettings()

    def to_argv(self) -> list[str]:
        """The runner's flags (after `runner.py --model M --inputs D`)."""
        argv = ["--threads", str(self.threads), "--warmup", str(self.warmup), "--runs", str(self.runs)]
        argv += ["--batch", str(self.batch), "--metric", self.metric] + (
            ["--seq-len", str(self.seq_len)] if self.seq_len is not None else []
        )
        if self.thermal.cool_below_c is not None:
            argv += ["--cool-below", str(self.thermal.cool_below_c), "--cool-timeout", str(self.thermal.cool_timeout_s)]
        argv += ["--warm-margin", str(self.thermal.warm_margin_c), "--energy-hz", str(self.energy.sample_hz)]
        argv += ["--energy-s", str(self.energy.seconds)]
        argv += ["--idle-s", str(self.energy.idle_s)] + (["--external-meter"] if self.energy.external_meter else [])
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


class Conditions(BaseModel):
    """What else decides a number, read on the device by the runner (devices/standalone/sensors.py);
    "not available (why)" where the device does not say."""

    model_config = ConfigDict(extra="allow")

    cores_used: list[int] | str | None = None
    governors: list[str] | str | None = None
    cpufreq: dict[str, Any] | str | None = None
    load_avg: list[float] | str | None = None
    load_avg_end: list[float] | str | None = None
    power: dict[str, Any] | None = None  # {"charging": bool | None, "external_power": [...], "source": ...}
    screen: str | None = None
    sensors: str | None = None  # "device", or "simulated (...)" on the test rig

    @property
    def charging(self) -> bool | None:
        return (self.power or {}).get("charging")


class ThermalRecord(BaseModel):
    """The device's heat around one artifact's timed runs, and whether the run was taken hot."""

    model_config = ConfigDict(extra="allow")

    throttled: bool | None = None  # None: no sensor could tell
    reasons: list[str] = []
    warmed_c: float | str | None = None
    warm_margin_c: float | None = None
    cool_down: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None

    def hot_reasons(self) -> list[str]:
        """Why the run was measured hot (throttling, warming beyond the margin, a failed cool-down); [] if not."""
        return (list(self.reasons) or ["throttled"]) if self.throttled else []


class EnergyRecord(BaseModel):
    """Energy per inference from power sampled during the timed runs; `valid: false` says why not to use it."""

    model_config = ConfigDict(extra="allow")

    valid: bool = False
    reason: str | None = None
    source: str | None = None
    mj_per_inference: float | None = None
    mj_per_inference_above_idle: float | None = None
    mean_power_mw: float | None = None
    idle_power_mw: float | None = None
    sample_hz_requested: float | None = None
    sample_hz_achieved: float | str | None = None
    samples: int | None = None
    wall_s: float | None = None  # how long the model ran back to back while power was read
    inferences: int | None = None
    sensors: str | None = None  # "device", or "simulated (...)" on the test rig


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
    conditions: Conditions | None = None
    thermal: ThermalRecord | None = None
    energy: EnergyRecord | None = None

    def heat_warning(self) -> str | None:
        """One line when this result was taken hot (the cool-down timed out, throttling, warming)."""
        reasons = self.thermal.hot_reasons() if self.thermal is not None else []
        return f"measured hot, flagged in the manifest: {'; '.join(reasons)}" if reasons else None

    def get_extra(self, key: str) -> Any:
        """A runner key without a field of its own (machine, cpu, cpu_count, python, ...)."""
        return (self.model_extra or {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
