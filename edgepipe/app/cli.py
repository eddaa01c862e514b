"""Command line: `compress-and-export` and the `edgepipe` command group.

The CLI only builds the config (defaults < --smoke < --config file < flags) and calls the
orchestrator (edgepipe.app.run); every user-facing failure is an EdgepipeError, printed as
one line. Heavy modules (torch, transformers, the exporters) are imported inside the
commands, after the config is known to be valid: `--help` and a bad flag answer in ~0.2 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgepipe.config import SMOKE, build_config, load_fleet, load_yaml, parse_override
from edgepipe.errors import ConfigError, EdgepipeError
from edgepipe.quiet import offline_environment, quiet_libraries

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)
if not out_console.is_terminal:
    out_console.width = 160


def _flag_layer(pairs: list[tuple[str, Any]], set_: list[str] | None) -> dict[str, Any]:
    """Named flags that were given, then every --set KEY=VALUE: one dotted-key config layer."""
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in pairs if value is not None}
    flags.update(parse_override(item) for item in (set_ or []))
    return flags


def _renamed(old: str, new: str, value: Any, current: Any) -> Any:
    """An old flag spelling keeps working, with one line saying the new one."""
    if value is None:
        return current
    err_console.print(f"note: {old} is now {new}; the old spelling still works")
    return current if current is not None else value


def _notes(notes: list[str]) -> None:
    for note in notes:
        err_console.print(f"note: {note}")


def _disk_full(e: BaseException) -> bool:
    """Libraries that write files themselves (safetensors, exporters) report a full disk in their own words."""
    import errno

    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)


def _fail(e: BaseException, debug: bool) -> None:
    """User errors become one line (with --debug, their traceback too); anything else is a bug and re-raised."""
    if debug and (isinstance(e, EdgepipeError) or _disk_full(e)):
        err_console.print_exception()
    if isinstance(e, EdgepipeError):
        err_console.print(f"[bold red]error[/bold red] ({e.kind}): {e}", soft_wrap=True)
        raise typer.Exit(e.exit_code)
    if _disk_full(e):
        err_console.print(
            "[bold red]error[/bold red] (output): no space left on the device while writing the run; "
            "free space or choose another --out, then rerun to resume from the finished stages",
            soft_wrap=True,
        )
        raise typer.Exit(7)
    if isinstance(e, KeyboardInterrupt):
        err_console.print("interrupted; rerun the same command to resume from the finished stages")
        raise typer.Exit(130)
    raise e


def compress_and_export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="run directory (created; reruns resume it)")] = Path(
        "runs/latest"
    ),
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config; same keys as --set")] = None,
    teacher: Annotated[
        Path | None, typer.Option(help="local Hugging Face model dir (default: built-in all-MiniLM-L6-v2)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="CSV/JSONL with text,label columns (default: built-in Rotten Tomatoes)")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            help="sequence_classification, pair_classification, multi_label, embedding or token_classification "
            "(default auto: the teacher's head, else the data's columns: text_a,text_b,label = pairs; "
            "text,labels = multi-label; text alone = embedding; JSONL tokens,tags or CoNLL = token tagging)"
        ),
    ] = None,
    unlabeled: Annotated[
        Path | None,
        typer.Option(
            help="texts without labels (.txt one per line, or CSV/JSONL) the student learns from the teacher on"
        ),
    ] = None,
    allow_weak_teacher: Annotated[
        bool,
        typer.Option(
            "--allow-weak-teacher", help="distil even when the teacher does not clearly beat the majority baseline"
        ),
    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="CI-sized run: few hundred examples, 1-layer student")] = False,
    train_threads: Annotated[
        int | None, typer.Option("--train-threads", help="torch threads for training (default: all cores)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", hidden=True, help="old spelling of --train-threads")
    ] = None,
    bench_threads: Annotated[
        int | None, typer.Option("--bench-threads", help="runtime threads in benchmarks (default 1)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="training seed (default 0)")] = None,
    devices: Annotated[str | None, typer.Option(help="comma-separated devices to benchmark on (default: x86)")] = None,
    fleet: Annotated[
        Path | None, typer.Option("--fleet", help="YAML list of devices with their connection settings and tags")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="device the budget is for (default: the first of --devices)")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="budget: p50 latency on --device; turns the plan search on")
    ] = None,
    max_size_mb: Annotated[
        float | None, typer.Option("--max-size-mb", help="budget: artifact size in MB; turns the plan search on")
    ] = None,
    max_memory_mb: Annotated[
        float | None,
        typer.Option(
            "--max-memory-mb", help="budget: peak RSS in MB on --device (the runner's VmHWM); turns the plan search on"
        ),
    ] = None,
    min_accuracy: Annotated[
        float | None, typer.Option("--min-accuracy", help="budget: validation accuracy floor, a fraction (0.8)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override any config key: --set distill.temperature=4")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="teacher cache (default: $EDGEPIPE_CACHE or ~/.cache/edgepipe)")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Distill, prune, quantize and export (ONNX, TFLite, ORT, app bundles), benchmark on the devices; writes DIR/manifest.json and DIR/report.html."""
    offline_environment()
    try:
        train_threads = _renamed("--threads", "--train-threads", threads, train_threads)
        flags = _flag_layer(
            [
                ("teacher.path", teacher),
                ("data.path", data),
                ("task", task),
                ("data.unlabeled", unlabeled),
                ("teacher.require_beat_baseline", False if allow_weak_teacher else None),
                ("threads", train_threads),
                ("bench.threads", bench_threads),
                ("seed", seed),
                ("bench.devices", devices.split(",") if devices else ([device] if device else None)),
                ("bench.fleet", load_fleet(fleet) if fleet else None),
                ("search.device", device),
                ("search.max_latency_ms", max_latency_ms),
                ("search.max_size_mb", max_size_mb),
                ("search.max_memory_mb", max_memory_mb),
                ("search.min_accuracy", min_accuracy),
            ],
            set_,
        )
        file_layer = load_yaml(config) if config else {}
        notes: list[str] = []
        cfg = build_config(
            SMOKE if smoke else {}, file_layer, flags, source=str(config) if config else "config", notes=notes
        )
        _notes(notes)

        from edgepipe.app.run import compress_and_export
        from edgepipe.app.summary import summary_table
        from edgepipe.config import default_cache_dir
        from edgepipe.progress import RichProgress

        quiet_libraries()

        t0 = time.perf_counter()
        manifest = compress_and_export(cfg, out, cache_dir or default_cache_dir(), RichProgress(err_console))
        if manifest is None:  # a training process beside rank 0 (torchrun / accelerate launch): rank 0 reports
            return
        out_console.print(summary_table(manifest))
        out_console.print(
            f"run directory: {out}  (manifest.json; {time.perf_counter() - t0:.0f} s, {cfg.threads} training threads)"
        )
    except (Exception, KeyboardInterrupt) as e:  # _fail re-raises anything that is not a user error
        _fail(e, debug)


def bench_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="a run directory (its artifacts) or one model file (.onnx/.ort/.tflite/.pte); with --compare, two run directories"
        ),
    ],
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="compare two runs' measurements, pair by pair, refusing pairs taken under different conditions",
        ),
    ] = False,
    device: Annotated[
        list[str] | None,
        typer.Option("--device", "-d", help="x86, arm:USER@HOST[:PORT], android[:SERIAL]; repeat or comma-separate"),
    ] = None,
    inputs: Annotated[Path | None, typer.Option(help="eval inputs folder (*.npy) when PATH is a model file")] = None,
    bench_threads: Annotated[
        int | None, typer.Option("--bench-threads", help="runtime threads (default: the run's, 1)")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", hidden=True, help="old spelling of --bench-threads")
    ] = None,
    runs: Annotated[int | None, typer.Option(help="timed runs")] = None,
    warmup: Annotated[int | None, typer.Option(help="warm-up runs")] = None,
    max_eval: Annotated[
        int | None, typer.Option("--max-eval", help="accuracy on the first N test examples only")
    ] = None,
    pin_cores: Annotated[str | None, typer.Option("--pin-cores", help="taskset core list, e.g. 0 or 4-7")] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="comma-separated artifact names, e.g. onnx_int8,tflite_int8")
    ] = None,
    cool_below: Annotated[
        float | None,
        typer.Option("--cool-below", help="before each artifact, wait until the device reads below this many C"),
    ] = None,
    fleet: Annotated[
        Path | None, typer.Option("--fleet", help="YAML list of devices with their connection settings and tags")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="any bench.* key: --set bench.ssh.known_hosts=/path")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Benchmark a finished run (or one model file) on devices; results go into the run's manifest.json."""
    offline_environment()
    try:
        if compare:
            _compare(paths)
            return
        if len(paths) != 1:
            raise ConfigError(
                f"edgepipe bench takes one run directory or model file ({len(paths)} given); to compare two runs add --compare"
            )
        path = paths[0]
        bench_threads = _renamed("--threads", "--bench-threads", threads, bench_threads)
        flags = _flag_layer(
            [
                ("bench.devices", [d for item in device for d in item.split(",") if d] if device else None),
                ("bench.threads", bench_threads),
                ("bench.runs", runs),
                ("bench.warmup", warmup),
                ("bench.max_eval", max_eval),
                ("bench.pin_cores", pin_cores),
                ("bench.artifacts", artifacts.split(",") if artifacts else None),
                ("bench.thermal.cool_below_c", cool_below),
                ("bench.fleet", load_fleet(fleet) if fleet else None),
            ],
            set_,
        )
        if any(not k.startswith("bench.") for k in flags):
            raise ConfigError(
                "edgepipe bench takes bench.* settings only; other settings belong to compress-and-export"
            )
        from edgepipe.app.summary import bench_table, summary_table
        from edgepipe.progress import RichProgress

        if path.is_dir():
            from edgepipe.app.record import bench_run

            manifest = bench_run(path, flags, RichProgress(err_console))
            out_console.print(summary_table(manifest))
            out_console.print(f"results added to {path / 'manifest.json'}")
            return
        if not path.is_file():
            raise ConfigError(f"{path} does not exist; pass a run directory or a model file")
        if inputs is None:
            raise ConfigError(
                "benchmarking a single model file needs --inputs DIR (input_ids/attention_mask/token_type_ids/labels .npy)"
            )
        from edgepipe.devices.pool import DevicePool

        notes: list[str] = []
        cfg = build_config(flags, source="bench", notes=notes)
        # a model file's own sequence length (a TFLite model's fixed shape) unless one is asked for
        measurement = cfg.measurement().model_copy(update={} if "bench.seq_len" in flags else {"seq_len": None})
        with DevicePool(cfg.bench, err_console.print) as pool:
            results = [pool.get(text).benchmark(path, inputs, measurement) for text in cfg.bench.devices]
        out_console.print(bench_table(results))
        out_console.print_json(data=[r.to_dict() for r in results])
    except (Exception, KeyboardInterrupt) as e:  # _fail re-raises anything that is not a user error
        _fail(e, debug)


def _compare(paths: list[Path]) -> None:
    from rich.table import Table

    from edgepipe.app.compare import compare
    from edgepipe.app.report import load_run

    if len(paths) != 2:
        raise ConfigError(
            f"--compare takes two run directories ({len(paths)} given): edgepipe bench --compare RUN_A RUN_B"
        )
    (name_a, a), (name_b, b) = (load_run(p) for p in paths)
    if name_a == name_b:
        name_a, name_b = str(paths[0]), str(paths[1])
    matched, median = compare(a, b, name_a, name_b)
    table = Table(title=f"edgepipe bench --compare: A = {name_a}, B = {name_b}", title_justify="left")
    for col in (
        "device",
        "model",
        "artifact",
        "threads",
        "p50 ms A",
        "p50 ms B",
        "B / A",
        "metric A",
        "metric B",
        "peak RSS MB A / B",
        "mJ A / B",
        "comparable",
    ):
        table.add_column(col, justify="left" if col in ("device", "model", "artifact", "comparable") else "right")

    def cell(v, spec=".2f", scale=1.0):
        return "-" if v is None else f"{v * scale:{spec}}"

    def mj(row):
        e = row.energy
        return (
            "-" if e is None or e.mj_per_inference is None else f"{e.mj_per_inference:.3g}" + ("" if e.valid else "*")
        )

    for p in matched:
        table.add_row(
            p.a.device_label, p.a.model, p.a.artifact, str(p.a.threads),
            cell(p.a.latency_ms.p50), cell(p.b.latency_ms.p50), cell(p.ratio, ".2f"),
            cell(p.a.score, ".1f", 100), cell(p.b.score, ".1f", 100),
            f"{cell(p.a.peak_rss_mb, '.0f')} / {cell(p.b.peak_rss_mb, '.0f')}", f"{mj(p.a)} / {mj(p.b)}",
            "yes" if p.comparable else "NO: " + "; ".join(p.problems),
        )  # fmt: skip
    table.caption = (
        f"median p50 B / A over the {sum(p.comparable for p in matched)} comparable pairs: {median:.2f}"
        f" ({sum(not p.comparable for p in matched)} pairs left out); * energy marked invalid by the device"
    )
    table.caption_justify = "left"
    out_console.print(table)


def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="one run directory, or several to compare side by side")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="where report.html/report.md go (default: the single run dir, else ./report)"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    """Rebuild report.html + report.md from manifests (several runs: side by side)."""
    try:
        from edgepipe.app.report import load_goals, load_run, write_report

        runs = [load_run(d) for d in run_dirs]
        names = [n for n, _ in runs]
        if len(set(names)) != len(names):
            runs = [(str(d), m) for d, (_, m) in zip(run_dirs, runs)]
        goals = {name: g for (name, _), d in zip(runs, run_dirs) if (g := load_goals(d))}
        target = out or (run_dirs[0] if len(run_dirs) == 1 else Path("report"))
        for path in write_report(target, runs, goals):
            out_console.print(f"wrote {path}")
    except (Exception, KeyboardInterrupt) as e:  # _fail re-raises anything that is not a user error
        _fail(e, debug)


def version() -> None:
    """Print edgepipe's version."""
    import edgepipe

    out_console.print(edgepipe.__version__)


app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="edgepipe: compress Transformer classifiers for edge devices."
)
app.command("run")(compress_and_export_cmd)
app.command("bench")(bench_cmd)
app.command("report")(report_cmd)
app.command("version")(version)

compress_app = typer.Typer(add_completion=False)
compress_app.command()(compress_and_export_cmd)


def main() -> None:
    app()


def compress_main() -> None:
    compress_app()


if __name__ == "__main__":
    sys.exit(main())
