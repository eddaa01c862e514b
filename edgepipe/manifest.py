"""The run's manifest (`DIR/manifest.json`): the public contract apps, reports and scripts read.

Typed here, once, for every reader and writer (the run, `edgepipe bench`, the report, the
summary, `bench/`). The contract only grows: every key a release wrote stays, so each type
keeps unknown keys (`extra="allow"`: stage reports such as `train`, `recovery`, int8
budgets) and is written back with the keys it was read or built with: an optional key
nobody set is left out, not written as null.

One error policy: a missing or corrupt manifest is a `RunDirError` naming the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from edgepipe.errors import RunDirError
from edgepipe.measurement import Conditions, EnergyRecord, Latency, Measured, ThermalRecord
from edgepipe.rundir import write_json_atomic

FILE = "manifest.json"
ROLES = ("teacher", "student", "pruned")  # the stage ladder, in order


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    @model_serializer(mode="wrap")
    def _written_keys(self, handler):
        """Optional keys nobody set stay out of the file: a manifest keeps exactly the keys it was written with."""
        data = handler(self)
        for name, field in type(self).model_fields.items():
            if field.default is None and name not in self.model_fields_set and data.get(name) is None:
                data.pop(name, None)
        return data

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access to a stage report's key (declared or extra)."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key, default)

    def extra(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Artifact(_Open):
    """A file the run produced, with what its stage measured (parity, int8 agreement, metric...)."""

    path: str
    bytes: int
    sha256: str
    test_accuracy: float | None = None
    val_accuracy: float | None = None

    @property
    def key(self) -> str:
        """Stages that read the file are keyed on its content (edgepipe.stages)."""
        return self.sha256


class EvalInputs(_Open):
    """The pre-tokenized test split a device runner reads (.npy files) and its content key."""

    path: str
    key: str


class ModelEntry(_Open):
    """One model of the ladder: size facts, PyTorch metric, its stage's report, its artifacts."""

    params: int
    non_embedding_params: int | None = None
    macs: int | None = None
    macs_seq_len: int | None = None
    layers: int | None = None
    vocab_size: int | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None
    # (metric - baseline) / (teacher's metric - baseline): the share of the teacher's margin kept
    baseline_margin_kept: float | None = None
    artifacts: dict[str, Artifact] = {}
    eval_inputs: EvalInputs | None = None


class Benchmark(_Open):
    """One (device, model, artifact, threads, batch, seq_len, n_eval) measurement."""

    device: str
    device_info: dict[str, Any] | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    delegate: str | None = None
    threads: int
    seq_len: int | None = None
    batch: int | None = None
    latency_ms: Latency
    latency_samples_ms: list[float] | None = None
    accuracy: float | None = None
    n_eval: int | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    peak_rss_mb: float | None = None
    warmup_ms: list[float] | None = None  # each warm-up run, in order: the warm-up curve
    memory: dict[str, Any] | None = None  # peak RSS, RSS before/after load, PSS/USS: runner.memory_report
    conditions: Conditions | None = None  # governor, frequencies, cores, load, charging, screen
    thermal: ThermalRecord | None = None  # heat before/after, cool-down, throttled flag
    energy: EnergyRecord | None = None  # mJ per inference where the device measures power
    model: str
    artifact: str
    artifact_sha256: str | None = None

    # a second measurement with the same identity replaces the first
    IDENTITY: ClassVar[tuple[str, ...]] = ("device", "model", "artifact", "threads", "batch", "seq_len", "n_eval")
    # what a device result contributes to a row (the runner's other keys stay in its stage record)
    FROM_RESULT: ClassVar[tuple[str, ...]] = (
        "device",
        "device_info",
        "runtime",
        "runtime_version",
        "delegate",
        "threads",
        "seq_len",
        "batch",
        "latency_ms",
        "latency_samples_ms",
        "accuracy",
        "n_eval",
        "init_ms",
        "first_inference_ms",
        "peak_rss_mb",
        "warmup_ms",
        "memory",
        "conditions",
        "thermal",
        "energy",
        "metric",
        "metric_value",
    )

    @classmethod
    def from_result(cls, result: Measured, model: str, artifact: str, sha256: str, tags: dict[str, str]) -> Benchmark:
        data = result.to_dict()
        row = {k: data.get(k) for k in cls.FROM_RESULT} | {
            "model": model,
            "artifact": artifact,
            "artifact_sha256": sha256,
        }
        if tags:
            row["device_info"] = (row["device_info"] or {}) | {"tags": tags}
        return cls.model_validate(row)

    def identity(self) -> tuple:
        return tuple(self.get(k) for k in self.IDENTITY)

    @property
    def score(self) -> float | None:
        """The task's metric as measured on the device (`metric_value`; `accuracy` in manifests from before tasks)."""
        return (self.model_extra or {}).get("metric_value", self.accuracy)

    @property
    def emulated(self) -> str | None:
        return (self.device_info or {}).get("emulated")

    @property
    def device_label(self) -> str:
        """Emulated boards are plumbing checks, not performance numbers: say so wherever a latency is shown."""
        return f"{self.device} (emulated: {self.emulated})" if self.emulated else self.device


class Manifest(_Open):
    version: str
    config: dict[str, Any] = {}
    seed: int | None = None
    environment: dict[str, Any] = {}
    dataset: dict[str, Any] = {}
    models: dict[str, ModelEntry] = {}
    benchmarks: list[Benchmark] = []
    timings: dict[str, Any] = {}
    task: dict[str, Any] | None = None  # name and metric of the task (absent before tasks were named)
    bundles: dict[str, Any] | None = None
    search: dict[str, Any] | None = None  # the budget search's report (edgepipe.pipeline.search)
    # the task's metric without a model on the test split, and the teacher's verdict (edgepipe.pipeline.baseline)
    baseline: dict[str, Any] | None = None
    device_sessions: dict[str, Any] | None = None  # how the devices were driven (side by side or not, seconds each)

    # -- reading and writing ------------------------------------------------------

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        """The manifest of a run dir; a missing or damaged one is a one-line RunDirError."""
        path = Path(run_dir) / FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunDirError(f"{run_dir} has no {FILE}; run compress-and-export --out {run_dir} first") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise RunDirError(f"{path} is corrupt; rerun compress-and-export --out {run_dir} to rebuild it") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: Any, where: str = FILE) -> Manifest:
        if not isinstance(raw, dict):
            raise RunDirError(
                f"{where} is not an edgepipe manifest (a JSON object is expected); rerun compress-and-export"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise RunDirError(
                f"{where} is not an edgepipe manifest ({loc}: {err['msg']}); rerun compress-and-export"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / FILE, self.to_dict())

    # -- what readers ask ---------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.dataset.get("name", "?"))

    @property
    def shipped(self) -> str:
        """The role whose artifacts ship in the app bundles: the smallest model of the ladder."""
        return next(
            (r for r in reversed(ROLES) if r in self.models and r != "teacher"), next(iter(self.models), "teacher")
        )

    @property
    def metric(self) -> str:
        """The task's metric name (manifests from before task objects measured accuracy)."""
        return (self.task or {}).get("metric", "accuracy")

    def artifact(self, role: str, name: str) -> Artifact | None:
        model = self.models.get(role)
        return model.artifacts.get(name) if model else None

    def benchmarks_of(self, role: str, artifact: str, device: str | None = None) -> list[Benchmark]:
        return [
            b
            for b in self.benchmarks
            if b.model == role and b.artifact == artifact and (device is None or b.device == device)
        ]

    def upsert_benchmark(self, row: Benchmark, replace: bool = True) -> None:
        """One row per identity: a new measurement replaces the old (`replace`), an old one is kept only if new."""
        key = row.identity()
        for i, existing in enumerate(self.benchmarks):
            if existing.identity() == key:
                if replace:
                    self.benchmarks[i] = row
                return
        self.benchmarks.append(row)

    def keep_benchmarks(self, earlier: list[Benchmark]) -> None:
        """Carry over earlier rows (another device or thread count, added by `edgepipe bench`) whose
        artifact is still byte-identical; rows measured in this run win."""
        shas = {(role, name): a.sha256 for role, m in self.models.items() for name, a in m.artifacts.items()}
        for b in earlier:
            if b.artifact_sha256 is not None and shas.get((b.model, b.artifact)) == b.artifact_sha256:
                self.upsert_benchmark(b, replace=False)


def earlier_benchmarks(run_dir: Path) -> list[Benchmark]:
    """Rows a previous manifest of this run dir holds; read *before* the new run writes its first manifest."""
    try:
        return list(Manifest.load(run_dir).benchmarks)
    except RunDirError:
        return []
