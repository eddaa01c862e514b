"""A run dir's record - its manifest, its stages runner, its devices - and `edgepipe bench RUN`.

compress-and-export's `Run` (edgepipe.app.run) builds on `RunRecord` with the training and
export stages. `edgepipe bench` only measures a finished run's artifacts again, so this module
imports neither torch nor transformers: the command starts in ~2 s instead of the ~14 s those
imports take on the 2-core VM (measured; tests/test_layers.py keeps it so).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from edgepipe import distributed
from edgepipe.app import benchmark as bench_stage
from edgepipe.app.report import load_goals, write_report
from edgepipe.config import RunConfig, build_config, flatten_tree, migrate
from edgepipe.devices.pool import DevicePool
from edgepipe.errors import ConfigError, ModelError, RunDirError
from edgepipe.manifest import Manifest
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import RunDir, sha256_file
from edgepipe.stages import Stages


class RunRecord:
    """The manifest of a run dir, rewritten after every stage, and the devices that measure it."""

    def __init__(
        self,
        cfg: RunConfig,
        rundir: RunDir,
        progress: Progress,
        manifest: Manifest,
        dist: distributed.Dist = distributed.SINGLE,
    ):
        self.cfg, self.dir, self.manifest = cfg, rundir, manifest
        self.stages = Stages(rundir, progress, dist, timings=self.manifest.timings)
        self._lock = threading.RLock()  # device workers update the manifest side by side

    @property
    def progress(self) -> Progress:
        return self.stages.progress

    def save(self) -> None:
        if self.stages.dist.main:
            with self._lock:
                self.manifest.save(self.dir.root)

    def benchmark(self, pool: DevicePool) -> None:
        jobs = bench_stage.jobs_of(self.manifest, self.cfg.bench)
        bench_stage.benchmark(
            self.stages,
            self.manifest,
            jobs,
            self.cfg.bench,
            self.cfg.measurement().model_copy(update={"metric": self.manifest.metric}),
            pool,
            self.save,
        )

    def finish(self) -> None:
        """What the devices that worked measured is reported even when another failed."""
        self.save()
        name = self.dir.root.resolve().name
        goals = load_goals(self.dir.root)
        write_report(self.dir.root, [(name, self.manifest)], {name: goals} if goals else None)


def bench_run(out: Path, overrides: dict[str, Any], progress: Progress = Silent()) -> Manifest:
    """`edgepipe bench RUN_DIR`: benchmark a finished run's artifacts again (other devices, threads, runs).

    The run's own config is the base; `overrides` (bench.* keys) change how it is measured.
    Artifacts are hash-checked first: a file changed since the run is refused, not measured.
    """
    manifest = Manifest.load(out)
    base = migrate(flatten_tree(manifest.config))
    overrides = dict(overrides)
    seq = overrides.pop("bench.seq_len", None)
    if seq is not None and seq != base.get("export.seq_len", 64):
        raise ConfigError(
            f"the artifacts in {out} were built for sequence length {base.get('export.seq_len', 64)}; bench.seq_len={seq} does not match. "
            f"Rerun compress-and-export --out {out} --set export.seq_len={seq} to build them for {seq}"
        )
    if "bench.fleet" in overrides and "bench.devices" not in overrides:
        base.pop("bench.devices", None)  # `--fleet` alone: the fleet's devices, not the run's
    cfg = build_config(base, overrides, source="bench")
    with RunDir(out) as rundir:
        record = RunRecord(cfg, rundir, progress, manifest)
        for role, m in manifest.models.items():
            if m.eval_inputs is None:
                raise RunDirError(
                    f"{out} was made by an older edgepipe (no eval_inputs for {role}); rerun compress-and-export"
                )
        for job in bench_stage.jobs_of(manifest, cfg.bench):
            path = rundir.path(job.artifact.path)
            if not path.is_file() or sha256_file(path) != job.artifact.sha256:
                raise ModelError(
                    f"{path} is missing or changed since the run (sha256 mismatch); rerun compress-and-export --out {out}"
                )
        try:
            with DevicePool(cfg.bench, progress.log) as pool:
                record.benchmark(pool)
        finally:
            record.finish()
        return manifest
