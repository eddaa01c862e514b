"""Benchmarking a run's artifacts on its devices: one resumable stage per (device, artifact),
one worker per device, results upserted into the manifest as they arrive.

Shared by `compress-and-export` (after the exports) and `edgepipe bench RUN` (again, with
other devices or settings). A device that fails stops only itself; what the others measured
is in the manifest before the failure is raised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from edgepipe.config import BenchConfig
from edgepipe.device_spec import parse_device
from edgepipe.devices.pool import DevicePool, PoolFailure
from edgepipe.manifest import Artifact, Benchmark, EvalInputs, Manifest
from edgepipe.measurement import Measured, Measurement
from edgepipe.stages import Result, Stages


@dataclass(frozen=True)
class Job:
    """One artifact to measure, with the eval inputs of its model (its own vocabulary's ids)."""

    role: str
    name: str
    artifact: Artifact
    inputs: EvalInputs


@dataclass
class OnDevice:
    """A device of the pool, keyed by its name: how it is reached does not change its numbers."""

    text: str
    pool: DevicePool
    side_by_side: bool

    @property
    def key(self) -> str:
        return self.text


def _measure(
    ctx: Stages,
    *,
    device: OnDevice,
    role: str,
    name: str,
    artifact: Artifact,
    inputs: EvalInputs,
    measurement: Measurement,
) -> Result:
    model, eval_dir = ctx.path(artifact.path), ctx.path(inputs.path)
    what = f"benchmark {role} {name} on {device.text}"
    if device.side_by_side:  # one live progress bar at a time: workers log lines instead
        ctx.progress.log(f"{what} …")
        result = device.pool.get(device.text).benchmark(model, eval_dir, measurement)
    else:
        for _ in ctx.progress.track([None], 1, what):
            result = device.pool.get(device.text).benchmark(model, eval_dir, measurement)
    if (warning := result.heat_warning()) is not None:
        ctx.progress.log(f"warning: {role} {name} on {device.text} {warning}")
    return result.to_dict(), []


def jobs_of(manifest: Manifest, bench: BenchConfig) -> list[Job]:
    """Every artifact of every model the bench settings select."""
    jobs = []
    for role, m in manifest.models.items():
        if m.eval_inputs is None or (bench.models is not None and role not in bench.models):
            continue
        jobs += [
            Job(role, name, art, m.eval_inputs)
            for name, art in m.artifacts.items()
            if bench.artifacts is None or name in bench.artifacts
        ]
    return jobs


def benchmark(
    stages: Stages,
    manifest: Manifest,
    jobs: list[Job],
    bench: BenchConfig,
    measurement: Measurement,
    pool: DevicePool,
    save: Callable[[], None],
) -> None:
    """Every job on every device of `bench`; rows replace earlier rows of the same identity."""
    lock = threading.Lock()

    def work(text: str) -> None:
        device = OnDevice(text, pool, bench.side_by_side)
        spec = parse_device(text)
        for job in jobs:
            # one record per identity: `edgepipe bench --bench-threads 2` must not overwrite the threads=1 result
            m = measurement
            name = f"bench_{spec.slug}_{job.role}_{job.name}_t{m.threads}_b{m.batch}_s{m.seq_len}" + (
                f"_n{m.max_eval}" if m.max_eval else ""
            )
            record = stages.run(
                name,
                _measure,
                device=device,
                role=job.role,
                name=job.name,
                artifact=job.artifact,
                inputs=job.inputs,
                measurement=measurement,
            )
            row = Benchmark.from_result(
                Measured.model_validate(record.result), job.role, job.name, job.artifact.sha256, bench.tags(text)
            )
            with lock:
                manifest.upsert_benchmark(row)
                save()

    driven = None
    try:
        driven = pool.each(bench.devices, work, bench.side_by_side)
    except PoolFailure as e:
        driven = e.driven
        raise
    finally:
        if driven is not None:  # how the devices were driven, also when one of them failed
            with lock:
                manifest.device_sessions = driven
                save()
