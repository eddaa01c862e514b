"""`compress-and-export`: the order of the stages, nothing else (`edgepipe bench RUN`, which
measures a finished run again, is edgepipe.app.record, the part of a run without torch).

Each stage (pipeline/, export/) takes the config sections it reads as keyword inputs, and its
key is derived from them and from its upstream results' keys (edgepipe.stages), so a changed
setting reruns exactly what depends on it; everything else is reused after its files pass a
sha256 check. The manifest (edgepipe.manifest) is rewritten atomically after every stage, so
a run that fails later keeps what it finished.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.markup import escape

import edgepipe
from edgepipe import distributed
from edgepipe.app.record import RunRecord
from edgepipe.config import (
    RunConfig,
    TeacherConfig,
    build_config,
    config_to_dict,
    explicit_keys,
    flatten_tree,
    for_data_size,
    for_task,
)
from edgepipe.devices.pool import DevicePool
from edgepipe.errors import BaselineError, BudgetError, ConfigError
from edgepipe.export import bundle, executorch, onnx, ort_format, tflite, tflite_metadata
from edgepipe.manifest import Artifact, EvalInputs, Manifest, ModelEntry, earlier_benchmarks
from edgepipe.model.load import Tokenizer, head_task, teacher_source
from edgepipe.model.task_model import TaskModel
from edgepipe.pipeline import augment, baseline, distill, evaluate, prune, quantize, search, teacher
from edgepipe.pipeline import data as data_stage
from edgepipe.progress import Progress, Silent
from edgepipe.rundir import RunDir, write_bytes_atomic
from edgepipe.stages import Record, Stages
from edgepipe.tokenized import TokenizedData

# share of test tokens outside a pruned vocabulary worth a warning: the built-in task's 9,752
# training texts miss 1.5 %, a 500-text trim 17.6 %, a 280-text user file 23.8 % (README)
VOCAB_MISS_WARNING = 0.05


@dataclass
class Role:
    """A model of the ladder with its tokenization (a pruned vocabulary has its own ids)."""

    name: str
    model: TaskModel
    data: TokenizedData
    tokenizer: Tokenizer


def environment(cfg: RunConfig) -> dict[str, Any]:
    import onnx as onnx_lib
    import onnxruntime
    import transformers

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx_lib.__version__,
        "onnxruntime": onnxruntime.__version__,
        **{
            name: version(name)
            for name in (
                "litert-torch",
                "ai-edge-litert",
                "ai-edge-quantizer",
                "tflite-support",
                "executorch",
                "torchao",
            )
        },
        "train_threads": cfg.threads,
    }


class Run(RunRecord):
    """One compress-and-export: the run record (manifest, stages, devices) and the ladder's stages."""

    def __init__(
        self,
        cfg: RunConfig,
        rundir: RunDir,
        progress: Progress,
        dist: distributed.Dist = distributed.SINGLE,
        manifest: Manifest | None = None,
    ):
        manifest = manifest or Manifest(
            version=edgepipe.__version__,
            config=config_to_dict(cfg),
            seed=cfg.seed,
            environment=environment(cfg),
            dataset={},
            models={},
            benchmarks=[],
        )
        super().__init__(cfg, rundir, progress, manifest, dist)
        self.probe = None  # the data's class labels when the task embeds labelled texts (linear probe)

    def record_config(self, cfg: RunConfig) -> None:
        """The config the shipped model is trained with (after a budget search: the chosen plan's)."""
        self.cfg = cfg
        self.manifest.config = config_to_dict(cfg)
        if self.stages.dist.main:
            write_bytes_atomic(
                self.dir.path("config.yaml"), yaml.safe_dump(self.manifest.config, sort_keys=False).encode()
            )

    # -- data and baseline --------------------------------------------------------------

    def fit_to_data(self, cfg: RunConfig, dataset: data_stage.Dataset) -> RunConfig:
        """Settings left to the data size filled in (recorded and printed), and the texts added for
        small-data distillation (`dataset.extra`); returns the config the run trains with."""
        for line in dataset.report.get("notes", []):
            self.progress.log(f"note: {escape(line)}")  # escaped: labels and paths may hold [brackets]
        n = len(dataset.texts["train"])
        cfg, chosen = for_data_size(cfg, n)
        self.manifest.dataset["size_defaults"] = {"train_examples": n, "chosen": chosen}
        self.take_defaults(cfg, chosen, f"{n} training examples", "chosen by data size")
        dataset.extra, self.manifest.dataset["transfer"] = augment.transfer_texts(
            dataset,
            copies=cfg.distill.augment or 0,
            max_examples=cfg.distill.transfer_max_examples,
            unlabeled=cfg.data.unlabeled,
            text_column=cfg.data.text_column,
            delimiter=cfg.data.delimiter,
            seed=cfg.seed,
        )
        if dataset.extra:
            self.progress.log(
                f"note: the student learns from the teacher on {len(dataset.extra)} texts beside the {n} labelled ones"
            )
        self.save()
        return cfg

    def take_defaults(self, cfg: RunConfig, chosen: dict[str, Any], what: str, why: str) -> None:
        """Settings filled for the user (`chosen`, now in `cfg`): recorded and said in one note."""
        if chosen:
            self.record_config(cfg)
            self.progress.log(
                f"note: {what}: "
                + ", ".join(f"{k}={v}" for k, v in chosen.items())
                + f" ({why}; --set any of them to override)"
            )

    def fit_to_task(self, cfg: RunConfig, teacher_model: TaskModel, explicit: set[str]) -> RunConfig:
        """The task's defaults (Task.config_defaults) for settings nobody set: printed, recorded."""
        task = teacher_model.task
        # the budget search plans heads, neurons, layers and vocabulary, not width: no width cut under it
        if cfg.search.active and cfg.prune.hidden:
            raise ConfigError("the budget search does not plan width cuts; drop prune.hidden or the search")
        width = {} if cfg.search.active else prune.width_defaults(teacher_model)
        defaults = width | task.config_defaults(teacher_model.dims.layers)
        cfg, chosen = for_task(cfg, defaults, explicit)
        self.manifest.dataset["task_defaults"] = {"task": task.name, "chosen": chosen}
        self.take_defaults(cfg, chosen, f"task {task.name} on {teacher_model.arch.model_type}", "the task's defaults")
        self.save()
        return cfg

    def check_teacher(self, model: TaskModel, tokens: TokenizedData, cfg: TeacherConfig) -> None:
        """The teacher against the baseline on the test split: said in one line, and by default the
        run stops here (the teacher is cached) when the teacher does not clearly beat it."""
        base = baseline.baseline(model.task, tokens.train.labels, tokens.test.labels)
        value = self.manifest.models["teacher"].get(model.task.metric)
        verdict = baseline.judge(value, base, margin=cfg.baseline_margin, p_value=cfg.baseline_p_value)
        if model.task.label_kind == "teacher":  # the teacher's outputs are the targets: it is the reference
            verdict |= {"beats": True, "reference": True}
        self.manifest.baseline = base | {"teacher": verdict}
        self.save()
        line = baseline.teacher_line(base, verdict)
        if verdict["beats"]:
            self.progress.log(f"[green]✓[/green] {line}")
            return
        fix = (
            f"train it longer (--set teacher.min_steps={max(2 * cfg.min_steps, 600)}), bring a fine-tuned teacher "
            "(--teacher DIR), or add labelled data"
        )
        if cfg.require_beat_baseline:
            raise BaselineError(
                f"{line}: not clearly better than no model (margin {cfg.baseline_margin * 100:g} points, "
                f"p < {cfg.baseline_p_value:g}); {fix}, or pass --allow-weak-teacher to distil it anyway"
            )
        self.progress.log(f"[yellow]![/yellow] {line}: not clearly better than no model; {fix}")

    # -- models -----------------------------------------------------------------------

    def record_model(self, role: Role, report: dict[str, Any], checkpoint: Path | None = None) -> None:
        """The manifest entry of a model: size facts, its PyTorch metric, its stage report, its eval inputs."""
        model, metric = role.model, role.model.task.metric
        probe = {"probe": self.probe} if self.probe is not None else {}  # embeddings of labelled texts
        ev = self.stages.run(
            f"eval_{role.name}", evaluate.run, model=model, data=role.data, role=role.name, **probe
        ).result
        # runner inputs: the teacher's ids (teacher, student), the pruned model's own (it may have its own vocabulary)
        inputs = self.dir.path("data/test" if role.name in ("teacher", "student") else f"data/test_{role.name}")
        self.stages.run(f"eval_inputs_{inputs.name}", _save_eval_inputs, data=role.data, directory=inputs.name)
        scores = {k.removeprefix("test_"): v for k, v in ev.items() if k.startswith("test_")}  # the task's others too
        entry = model.describe(self.cfg.export.seq_len) | scores | {f"val_{metric}": ev[f"val_{metric}"]} | report
        if checkpoint is not None:
            entry["checkpoint"] = self.dir.rel(checkpoint)
        base, teacher_entry = self.manifest.baseline, self.manifest.models.get("teacher")
        if base and teacher_entry is not None and role.name != "teacher":
            kept = entry["baseline_margin_kept"] = baseline.kept(entry[metric], teacher_entry.get(metric), base)
            if kept is not None:
                mark = "[green]✓[/green]" if kept >= 0.5 else "[yellow]![/yellow]"
                self.progress.log(
                    f"{mark} {role.name}: test {metric} {entry[metric] * 100:.1f}%, "
                    f"kept {kept * 100:.0f}% of the teacher's margin over the {base['name']} baseline"
                )
        entry |= {"artifacts": {}, "eval_inputs": EvalInputs(path=self.dir.rel(inputs), key=role.data.key)}
        self.manifest.models[role.name] = ModelEntry.model_validate(entry)
        self.manifest.task = {"name": model.task.name, "metric": metric}
        self.save()

    def artifact(self, role: str, name: str, record: Record) -> Artifact:
        """An artifact entry from its stage's record: the first file it wrote, and what it measured."""
        rel, sha = next(iter(record.files.items()))
        art = Artifact.model_validate(
            {"path": rel, "bytes": self.dir.path(rel).stat().st_size, "sha256": sha} | record.result
        )
        self.manifest.models[role].artifacts[name] = art
        self.save()
        return art

    # -- exports ------------------------------------------------------------------------

    def produce(self, stage: str, role: Role, name: str, entry, **settings) -> Artifact:
        """Runs one export stage of a role (resumed from its record when done) and files its artifact."""
        return self.artifact(role.name, name, self.stages.run(stage, entry, role=role.name, **settings))

    def export(self, roles: list[Role]) -> None:
        cfg = self.cfg
        seq, atol = cfg.export.seq_len, cfg.export.parity_atol
        for r in roles:
            self.produce(
                f"export_{r.name}_onnx_fp32",
                r,
                "onnx_fp32",
                onnx.run,
                model=r.model,
                data=r.data,
                opset=cfg.export.opset,
                parity_atol=atol,
            )
        for r in roles:
            if cfg.quantize.enabled and r.name in cfg.quantize.targets:
                self.produce(
                    f"quantize_{r.name}_onnx_int8",
                    r,
                    "onnx_int8",
                    quantize.run,
                    fp32=self.manifest.artifact(r.name, "onnx_fp32"),
                    data=r.data,
                    qcfg=cfg.quantize,
                    seq_len=seq,
                    task=r.model.task,
                    arch=r.model.arch,
                )
        for r in roles:
            if cfg.export.tflite and r.name in cfg.export.tflite_targets:
                tflite.require_litert_torch()
                fp32 = self.produce(
                    f"export_{r.name}_tflite_fp32",
                    r,
                    "tflite_fp32",
                    tflite.run_fp32,
                    model=r.model,
                    data=r.data,
                    seq_len=seq,
                    buckets=cfg.export.bucket_lengths(),
                    parity_atol=atol,
                )
                self.produce(
                    f"export_{r.name}_tflite_int8",
                    r,
                    "tflite_int8",
                    tflite.run_int8,
                    model=r.model,
                    data=r.data,
                    fp32=fp32,
                    seq_len=seq,
                    buckets=cfg.export.bucket_lengths(),
                    qcfg=cfg.quantize,
                )
        for r in roles:
            if cfg.export.executorch and r.name in cfg.export.executorch_targets:
                self.executorch(r)
        self.app_artifacts(roles[-1])

    def executorch(self, r: Role) -> None:
        """`.pte` programs of one role: fp32 (checked against PyTorch), then each quantized variant."""
        cfg = self.cfg
        fp32 = self.produce(
            f"export_{r.name}_executorch_fp32",
            r,
            "executorch_fp32",
            executorch.run_fp32,
            model=r.model,
            data=r.data,
            seq_len=cfg.export.seq_len,
            parity_atol=cfg.export.parity_atol,
        )
        for variant in cfg.export.executorch_variants:
            if variant == "fp32" or (variant == "int8" and not cfg.quantize.enabled):
                continue
            self.produce(
                f"export_{r.name}_executorch_{variant}",
                r,
                f"executorch_{variant}",
                executorch.run_quantized,
                variant=variant,
                model=r.model,
                data=r.data,
                fp32=fp32,
                seq_len=cfg.export.seq_len,
                qcfg=cfg.quantize,
            )

    def app_artifacts(self, ship: Role) -> None:
        """ORT-format model for ORT Mobile and one app bundle per target, for the shipped model."""
        arts, task = self.manifest.models[ship.name].artifacts, ship.model.task
        if "onnx_int8" in arts:
            rec = self.stages.run(
                f"export_{ship.name}_ort",
                ort_format.run,
                role=ship.name,
                onnx=arts["onnx_int8"],
                data=ship.data,
                task=task,
            )
            self.artifact(ship.name, "ort", rec)
        bundles = self.manifest.bundles or {}
        for target, name in bundle.TARGETS.items():
            if name in arts:
                bundles[target] = self.stages.run(
                    f"bundle_{target}",
                    bundle.run,
                    target=target,
                    role=ship.name,
                    artifact=arts[name],
                    tokenizer=ship.tokenizer,
                    labels=ship.model.labels,
                    seq_len=self.cfg.export.seq_len,
                    tflite_metadata=self.cfg.export.tflite_metadata,
                    task=task,
                    arch=ship.model.arch,
                    edgepipe_version=edgepipe.__version__,
                    app_check_sha256=bundle.app_check_sha256(),
                    **({"calibration": ship.model.calibration} if ship.model.calibration else {}),
                ).result
        self.manifest.bundles = bundles
        self.save()


def _save_eval_inputs(ctx: Stages, *, data: TokenizedData, directory: str) -> tuple[dict[str, Any], list[Path]]:
    """The pre-tokenized test split as .npy files, what a device runner reads."""
    return {"n": len(data.test)}, data.test.save(ctx.path(f"data/{directory}"))


def preflight(cfg: RunConfig) -> None:
    """Fail before hours of training, not after."""
    if cfg.export.tflite:
        tflite.require_litert_torch(import_it=False)
        if cfg.export.tflite_metadata:
            tflite_metadata.require_tflite_support()
    if cfg.export.executorch:
        executorch.require_executorch(import_it=False)


def compress_and_export(cfg: RunConfig, out: Path, cache_dir: Path, progress: Progress = Silent()) -> Manifest | None:
    explicit = explicit_keys(cfg)  # before any rebuild: what the user set wins over the task's defaults
    torch.set_num_threads(cfg.threads)
    preflight(cfg)
    dist = distributed.init_from_env()
    if not dist.main:
        progress = Silent()
        dist.barrier()  # rank 0 creates and locks the run dir first
    with RunDir(out, writer=dist.main) as rundir:
        if dist.main:
            dist.barrier()
        earlier = earlier_benchmarks(rundir.root)  # before this run writes its first manifest over them
        run = Run(cfg, rundir, progress, dist)
        stages = run.stages
        run.record_config(cfg)

        source = teacher_source(cfg.teacher.path)
        dataset, run.manifest.dataset = data_stage.load_dataset(cfg.data, cfg.task, head_task(source))
        cfg = run.fit_to_data(cfg, dataset)
        run.probe = dataset.probe
        tokenizer = Tokenizer.load(source)
        tokens = dataset.tokenize(tokenizer.hf, cfg.data.max_length)
        run.save()

        # teacher -> student -> pruned ------------------------------------------------
        t_model, t_report = teacher.prepare(
            dataset,
            tokens.train,
            tokens.val,
            cfg.teacher,
            max_length=cfg.data.max_length,
            seed=cfg.seed,
            threads=cfg.threads,
            cache_dir=cache_dir,
            progress=progress,
        )
        cached = t_report.get("cache_hit", True) and t_report.get("fine_tuned", True)
        progress.log("[green]✓[/green] teacher" + (" [dim](cached)[/dim]" if cached else ""))
        cfg = run.fit_to_task(cfg, t_model, explicit)
        targets = None
        if t_model.task.label_kind == "teacher":  # embeddings: the teacher's outputs are every split's targets
            targets = stages.run("teacher_targets", distill.teacher_targets, teacher=t_model, data=tokens)
            dataset.set_targets(distill.load_teacher_targets(stages))
            tokens = dataset.tokenize(tokenizer.hf, cfg.data.max_length)
        roles = [Role("teacher", t_model, tokens, tokenizer)]
        run.record_model(roles[0], t_report)
        run.check_teacher(t_model, tokens, cfg.teacher)
        if targets is not None and not dataset.extra:  # the soft targets are the training split's targets
            soft = distill.SoftTargets(torch.from_numpy(dataset.label_ids["train"]), targets.key)
        else:
            soft = distill.load_soft_targets(
                stages, stages.run("soft_targets", distill.soft_targets, teacher=t_model, data=tokens)
            )

        rec = stages.run(
            "distill",
            distill.run,
            mode="all",
            teacher=t_model,
            soft_targets=soft,
            data=tokens,
            tokenizer=tokenizer,
            student=cfg.student,
            distill=cfg.distill,
            seed=cfg.seed,
            threads=cfg.threads,
        )
        student = distill.load(stages, rec)
        roles.append(Role("student", student, tokens, tokenizer))
        run.record_model(roles[-1], rec.result, stages.path(distill.STUDENT_DIR) / "model.safetensors")

        if cfg.prune.enabled:
            scores = (
                prune.uniform_importance(student)
                if not prune.needs_importance(cfg.prune) and not cfg.search.active
                else prune.load_importance(
                    stages.run(
                        "importance",
                        prune.importance,
                        student=student,
                        soft_targets=soft,
                        data=tokens,
                        method=cfg.prune.importance,
                        batches=cfg.prune.importance_batches,
                        **({"width": True} if cfg.prune.hidden else {}),  # earlier runs' scores stay valid
                        distill=cfg.distill,
                        seed=cfg.seed,
                        threads=cfg.threads,
                    )
                )
            )
            if cfg.search.active:
                cfg = budget_search(run, student, scores, dataset, tokens, tokenizer, soft)
            rec = stages.run(
                "prune",
                prune.run,
                mode="all",
                student=student,
                scores=scores,
                soft_targets=soft,
                dataset=dataset,
                tokenizer=tokenizer,
                prune=cfg.prune,
                distill=cfg.distill,
                embedding=cfg.quantize.embedding,
                max_length=cfg.data.max_length,
                seed=cfg.seed,
                threads=cfg.threads,
            )
            pruned = prune.load(stages, rec)
            outside = rec.result.get("vocab", {}).get("test_tokens_outside_kept", 0)
            if outside > VOCAB_MISS_WARNING:
                progress.log(
                    f"[yellow]![/yellow] the pruned vocabulary, kept from {len(dataset.texts['train'])} training texts, "
                    f"misses {outside * 100:.0f}% of the test split's tokens; --set prune.vocab=false keeps every row"
                )
            p_tokenizer = Tokenizer.load(stages.path(prune.PRUNED_DIR)) if cfg.prune.vocab else tokenizer
            roles.append(Role("pruned", pruned, dataset.tokenize(p_tokenizer.hf, cfg.data.max_length), p_tokenizer))
            run.record_model(roles[-1], rec.result, stages.path(prune.PRUNED_DIR) / "model.safetensors")

        # training is over: the other ranks leave, rank 0 carries on alone
        if dist.active:
            dist.close()
            stages.dist = distributed.SINGLE
            if not dist.main:
                return None

        # export and benchmark --------------------------------------------------------
        run.export(roles)
        try:
            with DevicePool(cfg.bench, progress.log) as pool:
                run.benchmark(pool)
        finally:
            run.manifest.keep_benchmarks(earlier)
            search.outcome(run.manifest, cfg.search, cfg.bench.threads, progress)
            run.finish()
        return run.manifest


def budget_search(
    run: Run,
    student: TaskModel,
    scores: prune.Importance,
    dataset,
    tokens: TokenizedData,
    tokenizer: Tokenizer,
    soft: distill.SoftTargets,
) -> RunConfig:
    """The plan that meets the budget on the device (rank 0 searches, every rank gets its plan);
    returns the config the pruned model is then trained with, recorded as the run's config."""
    cfg, stages = run.cfg, run.stages
    overrides = None
    if stages.dist.main:
        device = cfg.search_device
        search_data = search.prepare(
            stages, student, dataset, tokens, tokenizer, soft, cfg.search.vocab, cfg.data.max_length
        )
        measurement = cfg.measurement().latency_only()
        with DevicePool(cfg.bench, run.progress.log) as pool:
            probe = search.Probe(
                device,
                measurement,
                lambda path: pool.get(device).benchmark(path, search_data.latency_inputs, measurement),
            )
            try:
                plan, fmt, report = search.search(
                    stages,
                    student,
                    scores,
                    search_data,
                    search=cfg.search,
                    writers=search.Writers(cfg.export.seq_len, cfg.export.opset, cfg.quantize),
                    distill=cfg.distill,
                    recovery_lr=cfg.prune.recovery_lr,
                    seed=cfg.seed,
                    probe=probe,
                )
            except BudgetError as e:
                run.manifest.search = e.report
                run.save()
                raise
        run.manifest.search = report
        run.save()
        c = report["chosen"]
        run.progress.log(
            f"[green]✓[/green] search: {c['plan']} as {c['format']}, {c['latency_ms']:.2f} ms, {c['size_mb']:.1f} MB, "
            f"val {report['metric']} ≈ {c['accuracy'] * 100:.1f}% ({len(report['candidates'])} candidates, {report['seconds']:.0f} s)"
        )
        overrides = plan.prune_overrides()
    cfg = build_config(flatten_tree(config_to_dict(cfg)), stages.dist.broadcast(overrides))
    run.record_config(cfg)
    return cfg
