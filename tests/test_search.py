"""Budget search (#9): the pure parts exactly, then real searches on the CI-sized default task.

The searches measure on this machine's x86 runner (the real one, 1 thread); the budget
is set relative to what the same run measured, so a noisy machine moves both sides.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import SMOKE_ARGS, run_cli
from edgepipe.config import PruneConfig, SearchConfig, build_config
from edgepipe.errors import ConfigError
from edgepipe.pipeline.prune import Importance, select
from edgepipe.pipeline.search import (
    MIN_POINTS,
    Dims,
    LinearFit,
    Plan,
    features,
    misses,
    overshoot,
    pareto_front,
    plan_layout,
)

SEARCH_FLAGS = [
    "--set",
    "search.formats=[onnx_int8]",
    "--set",
    "search.latency_points=8",
    "--set",
    "search.candidates=3",
    "--set",
    "search.estimate_steps=20",
    "--set",
    "export.tflite=false",
]


def test_linear_fit_recovers_a_known_latency_law():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.ones(30), rng.integers(1, 4, 30), rng.uniform(0, 50, 30), rng.uniform(0, 80, 30)])
    truth = np.array([0.2, 0.05, 0.01, 0.004])
    fit = LinearFit.fit(X, X @ truth)
    assert np.allclose(fit.coef, truth, rtol=1e-6)
    assert all(c >= 0 for c in LinearFit.fit(X, X @ truth * rng.uniform(0.95, 1.05, 30)).coef)


def test_features_count_attention_and_ffn_work():
    d = Dims(hidden=384, head_dim=32, seq_len=64, full_vocab=30522, kept_vocab=15000, other_embeddings=514)
    f = features({"heads": [12, 0], "ffn": [1536, 10]}, d)
    assert f[:4] == [1.0, 2.0, 1.0, 2.0]
    assert f[4] == pytest.approx((4 * 64 * 384 * 384 + 2 * 64 * 64 * 384) / 1e6)
    assert f[5] == pytest.approx(2 * 64 * 384 * 1546 / 1e6)


def test_plan_layout_is_the_prune_stage_selection():
    rng = np.random.default_rng(1)
    heads = [rng.random(12).astype(np.float32) for _ in range(3)]
    ffn = [rng.random(1536).astype(np.float32) for _ in range(3)]
    d = Dims(384, 32, 64, 30522, 15000, 514)
    plan = Plan(layers_removed=1, heads=0.5, ffn=0.6, vocab=True)
    assert plan_layout(Importance(heads, ffn, "k"), plan, d) == select(
        heads, ffn, PruneConfig(heads=0.5, ffn=0.6, layers=1), 384, 32
    )
    cfg = build_config(plan.prune_overrides())
    assert (cfg.prune.layers, cfg.prune.heads, cfg.prune.ffn, cfg.prune.vocab) == (1, 0.5, 0.6, True)


def test_budget_checks_and_pareto_front():
    s = SearchConfig(max_latency_ms=1.0, max_size_mb=5.0, min_accuracy=0.8)
    row = {"latency_ms": 1.2, "size_mb": 4.0, "accuracy": 0.75}
    assert misses(row, s, "latency_ms", "accuracy") == {"latency": "1.20 ms > 1 ms", "accuracy": "75.0% < 80%"}
    assert overshoot(row, s, "latency_ms", "accuracy") == pytest.approx(0.2 + 0.05 / 0.8)
    assert overshoot({"latency_ms": 0.9, "size_mb": 4.0, "accuracy": 0.81}, s, "latency_ms", "accuracy") == 0
    rows = [
        {"latency_ms": 1, "size_mb": 3, "accuracy": 0.8},
        {"latency_ms": 2, "size_mb": 3, "accuracy": 0.9},
        {"latency_ms": 2, "size_mb": 3, "accuracy": 0.85},
        {"latency_ms": 0.5, "size_mb": 9, "accuracy": 0.7},
    ]
    assert pareto_front(rows) == [0, 1, 3]


def test_search_config_is_validated():
    with pytest.raises(ConfigError, match=r"search.heads: .*ratios must be in \[0, 1\)"):
        build_config({"search.heads": [0.5, 1.0]})
    with pytest.raises(ConfigError, match="search.formats .*tflite_int8.* are not produced"):
        build_config({"search.max_latency_ms": 1, "export.tflite": False, "search.formats": ["tflite_int8"]})
    with pytest.raises(ConfigError, match=r"search.formats \['executorch_int8'\] .*export.executorch"):
        build_config({"search.max_latency_ms": 1, "search.formats": ["executorch_int8"]})
    pte = {"search.max_latency_ms": 1, "search.formats": ["executorch_int8"], "export.executorch": True}
    assert build_config(pte).search.formats == ["executorch_int8"]
    with pytest.raises(ConfigError, match="needs prune.enabled"):
        build_config({"search.max_latency_ms": 1, "prune.enabled": False})
    with pytest.raises(ConfigError, match="search.device arm:pi@board is not in bench.devices"):
        build_config({"search.max_latency_ms": 1, "search.device": "arm:pi@board"})
    with pytest.raises(ConfigError, match="min_accuracy"):
        build_config({"search.min_accuracy": 80})
    assert not build_config({}).search.active


@pytest.fixture(scope="module")
def search_run(smoke_run, tmp_path_factory):
    """The smoke run resumed with a latency budget: 0.9x the unpruned student's int8 p50, measured by
    `edgepipe bench` just before the search. `make test` runs this beside another test on the other
    core, so the budget and the plans must be timed under the same load: the smoke run's own p50 (timed
    minutes earlier, under another load) once put a plan the search measured at 1.18x the budget's
    ratio out of reach. 0.6x failed once on an idle machine (2.84 ms against 2.58 ms); 0.85x once the
    int8 models fuse attention (which makes removing heads save less), the closest plan at 0.857x
    (1.39 ms against 1.378 ms) on a slower VM."""
    import subprocess

    from conftest import BIN

    src, cache, _ = smoke_run
    out = tmp_path_factory.mktemp("search") / "run"
    shutil.copytree(src, out)
    bench = [str(BIN / "edgepipe"), "bench", str(out), "--device", "x86", "--artifacts", "onnx_int8"]
    proc = subprocess.run(
        [*bench, "--set", "bench.models=[student]", "--runs", "30", "--warmup", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    student_int8 = next(
        b
        for b in manifest["benchmarks"]
        if b["model"] == "student" and b["artifact"] == "onnx_int8" and b["latency_ms"]["n"] == 30
    )
    budget = round(0.9 * student_int8["latency_ms"]["p50"], 3)
    proc = run_cli(
        *SMOKE_ARGS, "--out", str(out), "--device", "x86", "--max-latency-ms", str(budget), *SEARCH_FLAGS, cache=cache
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache, budget, json.loads((out / "manifest.json").read_text())


@pytest.mark.e2e
@pytest.mark.timing
def test_search_meets_a_latency_budget_on_x86(search_run):
    out, _, budget, m = search_run
    s = m["search"]
    assert s["device"] == "x86" and s["budget"]["max_latency_ms"] == budget
    chosen = s["chosen"]
    assert chosen["latency_ms"] <= budget and chosen["misses"] == {}
    # the shipped model is the chosen plan, fully trained
    assert m["models"]["pruned"]["heads_per_layer"] == chosen["shape"]["heads"]
    assert m["models"]["pruned"]["ffn_per_layer"] == chosen["shape"]["ffn"]
    assert m["config"]["search"]["max_latency_ms"] == budget
    # regression: the recorded config (manifest and config.yaml) is the one the shipped model was trained with
    import yaml

    for recorded in (m["config"], yaml.safe_load((out / "config.yaml").read_text())):
        assert {f"prune.{k}": v for k, v in recorded["prune"].items() if f"prune.{k}" in chosen["prune"]} == chosen[
            "prune"
        ]
    assert s["final"]["latency_ms"] > 0 and "meets_budget" in s["final"]
    # the latency model: fitted on untrained random shapes, checked on points and candidates it never saw
    lm = s["latency_models"]["onnx_int8"]
    assert lm["points"] == 8 and lm["holdout_error"]["n"] == 2 and lm["candidate_error"]["n"] == len(s["candidates"])
    for c in s["candidates"]:
        assert c["predicted_latency_ms"] > 0 and c["latency_ms"] > 0 and 0 < c["accuracy"] <= 1
        # a sanity bound only (units, a model fitted to garbage): the predictions are timings on a 2-core
        # machine whose other core runs another test (make test's second worker), seen 54 % high on one
        # candidate with that core idle; the report carries the real error
        assert 1 / 3 < c["predicted_latency_ms"] / c["latency_ms"] < 3.0
    for g in s["grid"]:
        assert g["predicted_feasible"] == (g["predicted_latency_ms"] <= budget)
    report = (out / "report.md").read_text()
    assert "### Budget search" in report and f"p50 ≤ {budget:g} ms" in report and "| chosen |" in report
    assert (out / "report_files" / "search.svg").is_file()


@pytest.mark.e2e
@pytest.mark.timing
def test_chosen_plan_is_on_the_pareto_front_and_best_within_budget(search_run):
    s = search_run[3]["search"]
    cands = s["candidates"]
    front = pareto_front(cands)
    chosen = next(
        i for i, c in enumerate(cands) if (c["plan"], c["format"]) == (s["chosen"]["plan"], s["chosen"]["format"])
    )
    assert chosen in front and cands[chosen]["pareto"]
    within = [c for c in cands if not c["misses"]]
    assert cands[chosen]["accuracy"] == max(c["accuracy"] for c in within)


@pytest.mark.e2e
@pytest.mark.timing
def test_infeasible_budget_names_the_closest_plan(search_run, tmp_path):
    src, cache, _, _ = search_run
    out = tmp_path / "run"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("run.lock"))
    proc = run_cli(
        *SMOKE_ARGS, "--out", str(out), "--device", "x86", "--max-latency-ms", "0.001", *SEARCH_FLAGS, cache=cache
    )
    assert proc.returncode == 8, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "error (budget): no plan in the search space meets the budget on x86: the closest, L-" in lines[0]
    assert "ms > 0.001 ms; raise the budget" in lines[0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["search"]["chosen"] is None and m["search"]["grid"]  # what was measured is kept
    # an accuracy floor nothing reaches fails after the estimates, naming the constraint
    proc = run_cli(
        *SMOKE_ARGS,
        "--out",
        str(out),
        "--device",
        "x86",
        "--max-latency-ms",
        "100",
        "--min-accuracy",
        "0.999",
        *SEARCH_FLAGS,
        cache=cache,
    )
    assert proc.returncode == 8
    assert "none of the 3 plans tried meets the budget on x86" in proc.stderr and "< 99.9%" in proc.stderr


@pytest.mark.e2e
@pytest.mark.timing
def test_search_stops_at_its_time_budget(smoke_run, tmp_path):
    """Called as a function on the smoke run's student: a 1 s budget stops after the fewest points a fit needs and one plan."""
    import time

    import torch

    from edgepipe.config import SMOKE
    from edgepipe.devices.x86 import X86Device
    from edgepipe.model.load import Tokenizer
    from edgepipe.model.task_model import load_model
    from edgepipe.pipeline import prune, search
    from edgepipe.pipeline.data import load_dataset
    from edgepipe.pipeline.distill import SoftTargets
    from edgepipe.rundir import RunDir
    from edgepipe.stages import Stages

    src = smoke_run[0]
    cfg = build_config(
        SMOKE,
        {
            "search.max_latency_ms": 100.0,
            "search.time_budget_s": 1,
            "search.latency_points": 12,
            "search.vocab": [False],
            "search.formats": ["onnx_int8"],
            "search.estimate_steps": 5,
            "export.tflite": False,
        },
    )
    student = load_model(src / "student", key="the smoke run's student")
    tokenizer = Tokenizer.load(src / "student")
    dataset, _ = load_dataset(cfg.data)
    data = dataset.tokenize(tokenizer.hf, cfg.data.max_length)
    soft = SoftTargets(torch.from_numpy(np.load(src / "data" / "teacher_train_logits.npy")), "its soft targets")
    with RunDir(tmp_path / "run") as rundir:
        stages = Stages(rundir)
        scores = prune.load_importance(
            stages.run(
                "importance",
                prune.importance,
                student=student,
                soft_targets=soft,
                data=data,
                method="taylor",
                batches=cfg.prune.importance_batches,
                distill=cfg.distill,
                seed=0,
                threads=1,
            )
        )
        search_data = search.prepare(
            stages, student, dataset, data, tokenizer, soft, cfg.search.vocab, cfg.data.max_length
        )
        measurement = cfg.measurement().latency_only()
        probe = search.Probe(
            "x86", measurement, lambda p: X86Device().benchmark(p, search_data.latency_inputs, measurement)
        )
        t0 = time.perf_counter()
        plan, fmt, report = search.search(
            stages,
            student,
            scores,
            search_data,
            search=cfg.search,
            writers=search.Writers(64, 18, cfg.quantize),
            distill=cfg.distill,
            recovery_lr=cfg.prune.recovery_lr,
            seed=0,
            probe=probe,
        )
        elapsed = time.perf_counter() - t0
    steps = [t["seconds"] for name, t in stages.timings.items() if name.startswith("search_")]
    assert report["stopped_by"] == "time_budget"
    assert report["latency_models"]["onnx_int8"]["points"] == MIN_POINTS < 12
    assert len({c["plan"] for c in report["candidates"]}) == 1
    assert len(steps) == MIN_POINTS + 1  # nothing ran beyond the minimum
    assert fmt == "onnx_int8" and report["chosen"]["plan"] == plan.label
    assert elapsed < sum(steps) + 30  # fits and bookkeeping are cheap next to the measurements


def test_the_searchs_int8_candidates_are_built_as_the_task_ships_them(tiny_teacher, tmp_path):
    """Embeddings ship dynamic int8 (Task.int8_activations): the candidates timed for the latency
    model are dynamic too, not the static graph the classification tasks ship."""
    import onnx

    from edgepipe import tasks
    from edgepipe.config import QuantizeConfig
    from edgepipe.model.load import load_teacher_dir
    from edgepipe.pipeline import search
    from edgepipe.runtimes.litert import LiteRTModel
    from edgepipe.runtimes.onnxruntime import OrtModel
    from edgepipe.tokenized import TokenizedSplit

    model, _ = load_teacher_dir(tiny_teacher, tasks.get("embedding"))
    ids = np.random.default_rng(0).integers(1000, 2000, (16, 16))
    split = TokenizedSplit(ids, np.ones_like(ids), np.zeros_like(ids), np.zeros((16, model.dims.hidden), np.float32))
    writers = search.Writers(16, 18, QuantizeConfig(calibration_examples=8))
    onnx_path = search.build_artifact(model.eval(), "onnx_int8", tmp_path / "c.onnx", split, writers)
    ops = {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
    assert "MatMulInteger" in ops and "QuantizeLinear" not in ops  # dynamic, no calibrated scales
    out = OrtModel(onnx_path).predict(split)
    assert out.shape == (16, model.dims.hidden) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=0.02)
    tfl = search.build_artifact(model.eval(), "tflite_int8", tmp_path / "c.tflite", split, writers)
    assert LiteRTModel(tfl).predict(split).shape == (16, model.dims.hidden)
    assert tfl.stat().st_size < (tmp_path / "c.fp32.tflite").stat().st_size / 2.5
