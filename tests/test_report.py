"""report.html / report.md.

Fast tier: the report's tables, choices and text from the fixture manifest (tests/fixtures/README.md
lists its numbers; every expectation below is worked out from them by hand). End-to-end (`e2e`):
the real run's report in a real headless Chromium, offline, nothing fetched, and `edgepipe report`.
"""

from __future__ import annotations

import http.server
import re
import shutil
import subprocess
import threading

import pytest
from fixtures import manifest, manifest_dict

from conftest import BIN
from edgepipe.app import report
from edgepipe.app.report import (
    baseline_summary,
    device_tables,
    ladder_rows,
    place_labels,
    render,
    search_rows,
    search_summary,
    ship_rows,
    shipped_choice,
    teacher_reference,
    training_curves,
    write_report,
)
from edgepipe.config import SearchConfig
from edgepipe.manifest import Manifest
from edgepipe.pareto import pareto
from edgepipe.progress import Silent

ARM = "arm:pi@board"
ARM_LABEL = "arm:pi@board (emulated: qemu-user)"
# the fixture's own budget (config.search and search.budget)
BUDGET = SearchConfig(max_latency_ms=1.2, max_size_mb=0.6, min_accuracy=0.865)


@pytest.fixture(scope="module")
def outcome():
    """search.outcome; pipeline/search.py imports torch (seconds), so only the tests that call it pay."""
    from edgepipe.pipeline.search import outcome

    return outcome


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 80.0), (2.0, 82.0), (1.5, 79.0), (3.0, 82.0), (0.5, 70.0), (2.0, 81.0)]
    assert pareto(pts) == [4, 0, 1]


@pytest.fixture
def no_plots(monkeypatch):
    """render() without matplotlib (the plots have their own tests): seconds saved per render."""
    monkeypatch.setattr(report, "plots", lambda runs: {})


def _without(raw: dict, **match) -> dict:
    """The manifest dict less the benchmark rows matching every key=value given."""
    raw["benchmarks"] = [b for b in raw["benchmarks"] if any(b[k] != v for k, v in match.items())]
    return raw


# -- what to ship ------------------------------------------------------------------------------------


def test_what_to_ship_per_device_against_the_teacher_on_the_same_device():
    assert ship_rows(manifest()) == [
        # the search chose the pruned int8 ONNX on x86 (though the int8 TFLite is faster there):
        # 8,000,000 / 500,000 bytes = 16x; teacher fp32 ONNX 10 ms / 1 ms = 10x; 0.855 / 0.90 = 95%
        ["x86", "pruned/onnx_int8", "0.5", "16.0×", "1.00", "10.0× (vs onnx_fp32)", "85.5%", "95.0%"],
        # no search on the board: the fastest bundled int8 artifact, TFLite 20 ms, against the
        # teacher's fp32 TFLite 300 ms = 15x; 8,000,000 / 400,000 = 20x; 0.87 / 0.90 = 96.7%
        [ARM_LABEL, "pruned/tflite_int8", "0.4", "20.0×", "20.00", "15.0× (vs tflite_fp32)", "87.0%", "96.7%"],
    ]


def test_without_a_search_the_fastest_bundled_int8_at_the_runs_thread_count_ships():
    m = manifest(search=None)
    # x86 at 2 threads ran the int8 TFLite in 0.25 ms, but the run's bench.threads is 1
    assert shipped_choice(m, "x86").latency_ms.p50 == 0.5
    assert ship_rows(m)[0] == [
        "x86",
        "pruned/tflite_int8",
        "0.4",
        "20.0×",
        "0.50",
        "16.0× (vs tflite_fp32)",  # 8 ms / 0.5 ms
        "87.0%",
        "96.7%",
    ]


def test_a_search_on_the_board_picks_its_format_there():
    raw = manifest_dict()
    raw["search"]["device"] = ARM
    rows = ship_rows(Manifest.parse(raw))
    # the board ships the searched int8 ONNX: 400 ms / 50 ms = 8x, 0.85 / 0.90 = 94.4%
    assert rows[1] == [ARM_LABEL, "pruned/onnx_int8", "0.5", "16.0×", "50.00", "8.0× (vs onnx_fp32)", "85.0%", "94.4%"]
    assert rows[0][1] == "pruned/tflite_int8"  # and x86 the fastest


def test_the_runs_thread_count_decides_the_rows_compared():
    raw = manifest_dict()
    raw["config"]["bench"]["threads"] = 2
    # only x86 has 2-thread rows: int8 ONNX 0.6 ms against the teacher's 6 ms
    assert ship_rows(Manifest.parse(raw)) == [
        ["x86", "pruned/onnx_int8", "0.5", "16.0×", "0.60", "10.0× (vs onnx_fp32)", "85.5%", "95.0%"]
    ]


def test_only_the_largest_evaluation_is_compared():
    raw = manifest_dict()
    quick = next(b for b in raw["benchmarks"] if (b["device"], b["artifact"]) == ("x86", "ort"))
    raw["benchmarks"].append(quick | {"n_eval": 50, "latency_ms": quick["latency_ms"] | {"p50": 0.1}})
    raw["search"] = None
    # the ORT row on 50 examples is fastest, but it is not on the full 200
    assert shipped_choice(Manifest.parse(raw), "x86").artifact == "tflite_int8"


def test_teacher_reference_is_fp32_in_the_same_runtime_else_fp32_onnx():
    m = manifest()
    pick = shipped_choice(m, ARM)
    ref = teacher_reference(m, pick)
    assert (ref.artifact, ref.device, ref.latency_ms.p50) == ("tflite_fp32", ARM, 300.0)
    raw = _without(manifest_dict(), device=ARM, model="teacher", artifact="tflite_fp32")
    assert ship_rows(Manifest.parse(raw))[1][5] == "20.0× (vs onnx_fp32)"  # 400 ms / 20 ms


def test_a_device_without_the_teacher_shows_no_ratio():
    raw = _without(manifest_dict(), device=ARM, model="teacher")
    assert ship_rows(Manifest.parse(raw))[1] == [
        ARM_LABEL,
        "pruned/tflite_int8",
        "0.4",
        "20.0×",  # sizes need no benchmark
        "20.00",
        "-",
        "87.0%",
        "-",
    ]


# -- tables ------------------------------------------------------------------------------------------


BASELINE = {
    "name": "majority",
    "metric": 0.6,
    "majority": 0.6,
    "stratified": 0.52,
    "majority_label_id": 0,
    "n_test": 200,
    "metric_name": "accuracy",
    "teacher": {"value": 0.9, "margin": 0.3, "p_value": 1e-20, "beats": True},
}


def test_ladder_rows_cost_and_keep_per_step():
    # metric (artifact): the artifact's own test_accuracy, else its first x86 benchmark
    assert ladder_rows(manifest()) == [
        ["teacher", "2.00", "5", "90.0%", "onnx_fp32", "8.0", "max |Δ| 1.5e-07", "90.0%", "-"],
        ["teacher", "2.00", "5", "90.0%", "tflite_fp32", "7.5", "max |Δ| 1.2e-07", "90.0%", "-"],
        ["teacher", "2.00", "5", "90.0%", "tflite_int8", "2.5", "98.0% agree", "88.0%", "-"],
        ["student", "1.00", "3", "88.0%", "onnx_fp32", "4.0", "max |Δ| 3.0e-07", "88.0%", "-"],
        ["pruned", "0.25", "1", "86.0%", "onnx_fp32", "1.0", "max |Δ| 2.1e-07", "86.0%", "-"],
        ["pruned", "0.25", "1", "86.0%", "onnx_int8", "0.5", "99.5% agree", "85.5%", "-"],
        ["pruned", "0.25", "1", "86.0%", "tflite_fp32", "0.8", "max |Δ| 1.8e-07", "86.0%", "-"],
        ["pruned", "0.25", "1", "86.0%", "tflite_int8", "0.4", "99.0% agree", "87.0%", "-"],
        ["pruned", "0.25", "1", "86.0%", "ort", "0.3", "100.0% agree", "85.5%", "-"],
    ]


def test_the_baseline_is_the_ladders_first_row_and_every_artifact_is_measured_against_it():
    m = manifest(baseline=BASELINE)
    m.models["pruned"].baseline_margin_kept = (0.86 - 0.6) / (0.9 - 0.6)
    rows = ladder_rows(m)
    assert rows[0] == ["no model (majority baseline)", "-", "-", "60.0%", "-", "-", "-", "-", "-"]
    assert [r[-1] for r in rows[1:4]] == ["+30.0", "+30.0", "+28.0"]  # 90 %, 90 %, 88 % against 60 %
    text = baseline_summary(m)
    assert (
        "always 'neg' (majority) scores 60.0% test accuracy, guessing at the training label frequencies (stratified) 52.0%"
        in text
    )
    assert "+30.0 points over it (clearly better, binomial p = 1e-20)" in text and "pruned 87%" in text
    md, _, svgs = render([("r", m)])
    assert "| no model (majority baseline) |" in md


def test_training_curves_are_plotted_with_the_kept_checkpoint():
    m = manifest()
    m.models["teacher"].train = {"curve": [[50, 0.8], [100, 0.9], [150, 0.85]], "best_step": 100, "best_val": 0.9}
    m.models["pruned"].recovery = {"curve": [[30, 0.7], [60, 0.8]], "best_step": 60, "best_val": 0.8}
    assert set(training_curves(m)) == {"teacher", "pruned"}
    md, _, svgs = render([("r", m)])
    assert "training" in svgs and "report_files/training.svg" in md
    assert "the circled point is the checkpoint kept" in md


def test_device_tables_one_per_device_emulated_ones_labelled():
    tables = device_tables(manifest())
    assert list(tables) == ["x86", ARM_LABEL]
    assert len(tables["x86"]) == 12 and len(tables[ARM_LABEL]) == 9
    # p90 = 1.2 x p50, p99 = 1.29 x p50 on every row
    assert tables["x86"][0] == [
        "teacher",
        "onnx_fp32",
        "onnxruntime 1.32.0",
        "CPUExecutionProvider",
        "1",
        "10.00",
        "12.00",
        "12.90",
        "90.0%",
        "200",
        "150",  # load ms, first run ms, peak RSS MB; no PSS, energy or heat in the fixture's (older) rows
        "30.00",
        "650",
        "-",
        "n/a",
        "n/a",
    ]
    assert tables["x86"][11] == [
        "pruned",
        "tflite_int8",
        "litert 2.3.0",
        "XNNPACK",
        "2",
        "0.25",
        "0.30",
        "0.32",
        "87.0%",
        "200",
        "150",
        "0.75",
        "650",
        "-",
        "n/a",
        "n/a",
    ]
    assert tables[ARM_LABEL][5] == [
        "pruned",
        "onnx_int8",
        "onnxruntime 1.32.0",
        "CPUExecutionProvider",
        "1",
        "50.00",
        "60.00",
        "64.50",
        "85.0%",
        "200",
        "4000",
        "150.00",
        "210",
        "-",
        "n/a",
        "n/a",
    ]


def _with_conditions(m: Manifest, artifact: str, device: str, governor: str, **thermal) -> None:
    """Gives one row what a runner with sensors records (the fixture's rows predate them)."""
    from edgepipe.measurement import Conditions, EnergyRecord, ThermalRecord

    row = next(b for b in m.benchmarks if b.artifact == artifact and b.device == device and b.model == "pruned")
    row.conditions = Conditions(
        cores_used=[0, 1], governors=[governor], load_avg=[0.5, 0.4, 0.3], power={"charging": False}, sensors="device"
    )
    row.thermal = ThermalRecord(
        throttled=bool(thermal.get("reasons")),
        reasons=thermal.get("reasons", []),
        before={"max_c": 41.0},
        after={"max_c": thermal.get("after", 43.5)},
        cool_down={"threshold_c": 45.0, "reached": True, "waited_s": 2.0},
    )
    row.energy = EnergyRecord(
        valid=True,
        source="hwmon ina219 power1_input",
        mj_per_inference=12.5,
        mean_power_mw=2500.0,
        sample_hz_achieved=9.8,
    )
    row.memory = {"pss_end_mb": 48.4}


def test_heat_energy_and_conditions_show_and_differing_conditions_are_flagged(no_plots):
    m = manifest()
    _with_conditions(m, "onnx_int8", ARM, "performance")
    assert device_tables(m)[ARM_LABEL][5][13:] == ["48", "12.5", "ok"]  # PSS, mJ / inference, heat
    md, _, _ = render([("run", m)])
    assert f"### Heat, energy and conditions on {ARM_LABEL}" in md
    assert (
        "| pruned | onnx_int8 | reached < 45 C after 2.0 s | 41.0 -> 43.5 | - | "
        "12.5 mJ, 2500 mW, 9.8 Hz (hwmon ina219 power1_input) | performance | 0,1 | no | 0.50 | device |" in md
    )
    assert "differing conditions" not in md and "measured hot" not in md
    _with_conditions(m, "tflite_int8", ARM, "schedutil", reasons=["warmed by 9.0 C (margin 5.0 C)"], after=50.0)
    md, _, _ = render([("run", m)])
    assert (
        "> Measured under differing conditions (governors: performance / schedutil): compare these rows with care."
        in md
    )
    assert "> 1 row(s) measured hot" in md and "| warmed by 9.0 C (margin 5.0 C) |" in md
    assert device_tables(m)[ARM_LABEL][7][15] == "HOT"


def test_the_pareto_plot_warns_when_its_points_differ_in_conditions(monkeypatch):
    m = manifest()
    _with_conditions(m, "onnx_int8", "x86", "performance")
    _with_conditions(m, "tflite_int8", "x86", "powersave", reasons=["Android thermal status 2 (moderate)"])
    titles = []
    import matplotlib.axes

    real = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda ax, t, **kw: titles.append(t) or real(ax, t, **kw))
    report.plots([("run", m)])
    x86 = next(t for t in titles if t.startswith("x86"))
    assert "WARNING: conditions differ: governors: performance / powersave; 1 measured hot (x)" in x86
    assert not any("WARNING" in t for t in titles if t.startswith("arm"))


# -- the budget search -------------------------------------------------------------------------------


def test_search_rows_mark_the_choice_and_what_the_others_miss():
    cands, models = search_rows(manifest().search)
    assert cands == [
        ["L-0_h0.00_f0.60_vocab", "tflite_int8", "0.60", "0.75", "0.41", "-", "86.0%", "", "86.0% < 86.5%"],
        ["L-0_h0.50_f0.60_vocab", "onnx_int8", "1.10", "1.00", "0.50", "-", "87.0%", "yes", "chosen"],
        ["L-0_h0.50_f0.60_vocab", "tflite_int8", "0.55", "0.50", "0.40", "-", "86.5%", "yes", "meets"],
    ]  # no peak RSS: the fixture's search predates memory budgets
    # candidate errors: ONNX |1.10 - 1.00| / 1.00 = 10%; TFLite 20% (0.60 vs 0.75) and 10% (0.55 vs 0.50)
    assert models == [
        ["onnx_int8", "8", "4.5% / 4.8% (n=2)", "10.0% / 10.0% (n=1)"],
        ["tflite_int8", "8", "4.5% / 4.8% (n=2)", "15.0% / 20.0% (n=2)"],
    ]


def test_search_summary_states_budget_choice_and_verdict():
    assert search_summary(manifest().search) == (
        "Budget on x86: p50 ≤ 1.2 ms, size ≤ 0.6 MB, val accuracy ≥ 86.5%. 3 plans measured after a short "
        "distillation (312 s, stopped: done). Chosen: L-0_h0.50_f0.60_vocab as onnx_int8. Fully trained: 1.00 ms, "
        "0.50 MB, test accuracy 85.5%; meets the budget."
    )
    s = manifest().search | {"chosen": None}
    assert search_summary(s).endswith("(312 s, stopped: done). No plan met the budget.")


def test_search_outcome_measures_the_fully_trained_plan(outcome):
    m = manifest()
    written = m.search.pop("final")
    outcome(m, BUDGET, 1, Silent())
    # x86, 1 thread, pruned int8 ONNX: 1.0 ms, 500,000 bytes, its own val accuracy 0.865 (= the floor: met)
    assert m.search["final"] == {
        "latency_ms": 1.0,
        "size_mb": 0.5,
        "peak_rss_mb": 650.0,
        "val_accuracy": 0.865,
        "test_accuracy": 0.855,
        "misses": {},
        "meets_budget": True,
    }
    assert m.search["final"] == written  # what the fixture holds is what the code writes


class _Log(Silent):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_search_outcome_names_every_constraint_missed(outcome):
    m, log = manifest(), _Log()
    budget = SearchConfig(max_latency_ms=0.8, max_size_mb=0.45, max_memory_mb=600, min_accuracy=0.9)
    outcome(m, budget, 1, log)
    misses = {
        "latency": "1.00 ms > 0.8 ms",
        "size": "0.50 MB > 0.45 MB",
        "memory": "peak RSS 650 MB > 600 MB",  # the benchmark row's VmHWM
        "accuracy": "86.5% < 90%",
    }
    assert m.search["final"]["misses"] == misses and m.search["final"]["meets_budget"] is False
    said = "1.00 ms > 0.8 ms; 0.50 MB > 0.45 MB; peak RSS 650 MB > 600 MB; 86.5% < 90%"
    assert log.lines == [f"[yellow]![/yellow] the fully trained plan misses the budget on x86: {said}"]
    assert search_summary(m.search).endswith(f"test accuracy 85.5%; misses it: {said}.")


def test_search_outcome_reads_the_chosen_format_at_the_runs_threads(outcome):
    m = manifest()
    m.search["chosen"]["format"] = "tflite_int8"
    outcome(m, BUDGET, 1, Silent())
    # the int8 TFLite has no val accuracy of its own: the pruned model's PyTorch one (0.87)
    assert m.search["final"] == {
        "latency_ms": 0.5,
        "size_mb": 0.4,
        "peak_rss_mb": 650.0,
        "val_accuracy": 0.87,
        "test_accuracy": 0.87,
        "misses": {},
        "meets_budget": True,
    }
    m = manifest()
    outcome(m, BUDGET, 2, Silent())
    assert m.search["final"]["latency_ms"] == 0.6  # the 2-thread row
    m = manifest()
    outcome(m, BUDGET, 4, Silent())
    assert m.search["final"] is None  # nothing measured at 4 threads


def test_search_outcome_without_a_choice_writes_nothing(outcome):
    m = manifest()
    m.search["chosen"] = None
    del m.search["final"]
    outcome(m, BUDGET, 1, Silent())
    assert "final" not in m.search
    m = manifest(search=None)
    outcome(m, BUDGET, 1, Silent())
    assert m.search is None


# -- the document ------------------------------------------------------------------------------------


def test_render_writes_every_section_in_markdown_and_html(no_plots):
    md, page, svgs = render([("fixture", manifest())])
    assert svgs == {} and md.startswith("# edgepipe report: fixture\n")
    headings = [
        "## What to ship",
        "## fixture",
        "### Stage ladder",
        "### Latency and accuracy on x86",
        f"### Latency and accuracy on {ARM_LABEL}",
        "### Budget search",
        "## Plots",
    ]
    at = [md.index(f"\n{h}\n") for h in headings]
    assert at == sorted(at)
    assert "| x86 | pruned/onnx_int8 | 0.5 | 16.0× | 1.00 | 10.0× (vs onnx_fp32) | 85.5% | 95.0% |" in md
    assert "| teacher | 2.00 | 5 | 90.0% | onnx_fp32 | 8.0 | max \\|Δ\\| 1.5e-07 | 90.0% |" in md
    assert "| L-0_h0.50_f0.60_vocab | onnx_int8 | 1.10 | 1.00 | 0.50 | - | 87.0% | yes | chosen |" in md
    assert "data: reviews.csv; task: sequence_classification" in md
    # html: the same tables (ship, ladder, 2 devices, search candidates and latency models), nothing to run
    assert page.count("<table>") == 6 and '<section class="ship"><h2>What to ship</h2>' in page
    assert "<script" not in page and "default-src 'none'" in page


def test_emulated_devices_are_labelled(no_plots):
    md, page, _ = render([("run", manifest_dict())])  # a plain dict is parsed too
    assert f"Latency and accuracy on {ARM_LABEL}" in md
    assert (
        f"> Emulated devices ({ARM_LABEL}): their latencies are plumbing checks, not performance numbers; "
        "their metrics are exact." in md
    )
    assert 'class="warn"' in page
    md, page, _ = render([("run", _without(manifest_dict(), device=ARM))])
    assert "emulated" not in md and 'class="warn"' not in page


def test_runs_side_by_side(no_plots):
    md, _, _ = render([("a", manifest()), ("b", manifest(search=None))])
    assert "## What to ship: a" in md and "## What to ship: b" in md and "## Runs side by side" in md
    # x86 at 1 thread, per run and artifact: size, metric, p50
    assert "| a | teacher | onnx_fp32 | 8.0 | 90.0% | 10.00 |" in md
    assert "| b | pruned | ort | 0.3 | 85.5% | 0.80 |" in md
    assert md.count("### Budget search") == 1


def test_write_report_writes_markdown_html_and_one_svg_per_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "plots", lambda runs: {"size_per_artifact": "<svg>sizes</svg>"})
    paths = write_report(tmp_path, [("fixture", manifest())])
    assert paths == [tmp_path / "report.md", tmp_path / "report.html"]
    md = (tmp_path / "report.md").read_text()
    assert "![File size per artifact.](report_files/size_per_artifact.svg)" in md
    assert (tmp_path / "report_files" / "size_per_artifact.svg").read_text() == "<svg>sizes</svg>"
    assert '<figure id="size_per_artifact"><svg>sizes</svg>' in (tmp_path / "report.html").read_text()


# -- plots -------------------------------------------------------------------------------------------


def _place(points, labels) -> tuple[list[str], list[tuple[str, str]]]:
    """place_labels on one device's panel, drawn as plots() draws it: the labels placed, and every
    pair of them whose drawn boxes (get_window_extent) overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    report._log_ms(ax)
    texts = place_labels(ax, points, labels)
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    plt.close(fig)
    overlaps = [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1 :] if box_a.overlaps(box_b)]
    return [name for name, _ in boxes], overlaps


def test_labels_of_points_that_coincide_do_not_overlap():
    # the x86 panel: every x86 row, as plots() labels it
    rows = [b for b in manifest().benchmarks if b.device == "x86"]
    points = [(b.latency_ms.p50, b.score * 100) for b in rows]
    labels = [f"{b.model}/{b.artifact}/t{b.threads}" for b in rows]
    # the case that was drawn one over the other: fp32 ONNX and fp32 TFLite of the pruned model
    assert points[labels.index("pruned/onnx_fp32/t1")] == points[labels.index("pruned/tflite_fp32/t1")] == (2.0, 86.0)
    placed, overlaps = _place(points, labels)
    assert sorted(placed) == sorted(labels) and overlaps == []


@pytest.mark.parametrize("n", [2, 4, 6, 12])
def test_labels_stacked_on_one_point_do_not_overlap(n):
    placed, overlaps = _place([(1.0, 85.0)] * n, [f"pruned/artifact_{i}/t1" for i in range(n)])
    assert len(placed) == n and overlaps == []


def test_two_runs_of_the_same_artifacts_do_not_overlap():
    """`edgepipe report A B` on two copies of one run: every point twice, labelled run:model/artifact."""
    rows = [b for b in manifest().benchmarks if b.device == "x86"]
    points = [(b.latency_ms.p50, b.score * 100) for b in rows] * 2
    labels = [f"{run}:{b.model}/{b.artifact}/t{b.threads}" for run in ("a", "b") for b in rows]
    placed, overlaps = _place(points, labels)
    assert sorted(placed) == sorted(labels) and overlaps == []


def test_plots_are_inline_svg_with_nothing_to_fetch():
    raw = _without(manifest_dict(), device="x86")  # the board's 9 rows: small figures, same code
    raw["search"] = None
    svgs = report.plots([("fixture", Manifest.parse(raw))])
    assert list(svgs) == ["accuracy_vs_latency", "size_per_artifact", "latency_distribution"]
    for svg in svgs.values():
        assert svg.startswith("<svg") and "<text" not in svg  # text drawn as paths: no font needed
        assert not re.search(r"""(?:href|src)\s*=\s*["'](?:https?:)?//""", svg)


def test_the_growth_plot_gains_a_wall_time_panel_only_where_sizes_were_measured():
    """Three panels with `--wall-sizes` rows (a failed size is left out of the line, kept in the table), two without."""
    sc = {
        "by_seq_len": [{"seq_len": 16, "p50_ms": 0.25}, {"seq_len": 64, "p50_ms": 1.1}],
        "by_batch": [
            {"batch": 1, "p50_ms": 1.1, "per_sequence_ms": 1.1},
            {"batch": 4, "p50_ms": 3.2, "per_sequence_ms": 0.8},
        ],
    }
    rows = [
        {"train_examples": 1000, "wall_s": 420.0, "rc": 0},
        {"train_examples": 3000, "wall_s": 610.0, "rc": 0},
        {"train_examples": 9000, "wall_s": 12.0, "rc": 3},
    ]

    def axes(svg: str) -> list[str]:
        return re.findall(r'<g id="(axes_\d+)">', svg)

    assert axes(report.scaling_svg(sc)) == ["axes_1", "axes_2"]
    assert axes(report.scaling_svg(sc, wall_by_size=rows[2:])) == ["axes_1", "axes_2"]
    with_sizes = report.scaling_svg(sc, wall_by_size=rows)
    assert axes(with_sizes) == ["axes_1", "axes_2", "axes_3"]
    # the line is the successful sizes' wall times: the failed one adds nothing, another time moves it
    assert with_sizes == report.scaling_svg(sc, wall_by_size=rows[:2])
    assert with_sizes != report.scaling_svg(sc, wall_by_size=[rows[0], rows[1] | {"wall_s": 900.0}])


# -- end to end: the real run ------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--dns-prefetch-disable",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
]


class _Trap(http.server.BaseHTTPRequestHandler):
    """A proxy that answers nothing and remembers every request the browser tried to make."""

    seen: list[str] = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_CONNECT = _record

    def log_message(self, *args):
        pass


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium_and_requests_nothing(smoke_run, tmp_path):
    out, _, _ = smoke_run
    page = out / "report.html"
    text = page.read_text()
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text), (
        "the report must not reference the network"
    )
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    flags = [*CHROME_FLAGS, f"--proxy-server=http://127.0.0.1:{proxy.server_port}", "--proxy-bypass-list=<-loopback>"]

    def visit(url: str, *extra: str) -> tuple[str, set[str]]:
        _Trap.seen = []
        profile = f"--user-data-dir={tmp_path / 'profile'}"
        dom = subprocess.run(
            [CHROMIUM, *flags, profile, *extra, url], capture_output=True, text=True, timeout=120
        ).stdout
        return dom, {r.split("?")[0] for r in _Trap.seen}

    try:
        # Chromium itself still dials a couple of Google hosts at start-up (sign-in, search
        # preconnect) whatever the flags; an empty page shows which, so only the page's own count
        _, browser_own = visit("about:blank", "--dump-dom")
        dom, seen = visit(page.as_uri(), "--dump-dom")
        shot = tmp_path / "report.png"
        _, seen_shot = visit(page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    finally:
        proxy.shutdown()
    assert (seen | seen_shot) <= browser_own, f"the report made requests: {(seen | seen_shot) - browser_own}"
    assert not any(r.startswith("GET ") for r in seen | seen_shot)
    for fig in ("accuracy_vs_latency", "size_per_artifact", "latency_distribution"):
        assert re.search(rf'<figure id="{fig}"><svg', dom), fig
    assert dom.count("<table") >= 2 and "Stage ladder" in dom and "Pareto front" in dom
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    hist = img.histogram()
    assert sum(hist[:200]) > 0.02 * img.size[0] * img.size[1]  # text, bars and lines, not a blank page


@pytest.mark.e2e
def test_report_command_compares_runs_side_by_side(smoke_run, tmp_path):
    out, _, _ = smoke_run
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(out / "manifest.json", tmp_path / name / "manifest.json")
    proc = subprocess.run(
        [str(BIN / "edgepipe"), "report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Runs side by side" in md and "## a" in md and "## b" in md
    assert (tmp_path / "cmp" / "report.html").stat().st_size > 10_000
    for fig in ("accuracy_vs_latency", "size_per_artifact", "latency_distribution"):
        assert (tmp_path / "cmp" / "report_files" / f"{fig}.svg").is_file()
    proc = subprocess.run(
        [str(BIN / "edgepipe"), "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 7 and "has no manifest.json" in proc.stderr and "Traceback" not in proc.stderr


def test_a_benchmarked_run_shows_its_goals_scaling_and_wall_by_size(no_plots, tmp_path):
    """goals.json (what `python -m bench` keeps in the run) adds the goal table, the growth table with its
    plot and the wall time by training-set size; a run without one, or with a foreign file, has none."""
    goals = {
        "machine": {"model": "Test CPU", "logical_cpus": 2},
        "seq_len": 64,
        "rounds": 5,
        "runs_per_round": 50,
        "mode": "full",
        "table": [["1 size", "teacher fp32 ONNX / pruned int8 ONNX (bytes)", "-", "21.40x", ">= 20x", "met"]],
        "results": {
            "scaling": {
                "by_seq_len": [{"seq_len": 16, "p50_ms": 0.25}, {"seq_len": 64, "p50_ms": 1.1}],
                "by_batch": [
                    {"batch": 1, "p50_ms": 1.1, "per_sequence_ms": 1.1},
                    {"batch": 4, "p50_ms": 3.2, "per_sequence_ms": 0.8},
                ],
                "throughput": [{"threads": 1, "sequences_per_s": 1250.0}],
            },
            "wall_by_size": {
                "rows": [{"train_examples": 1000, "wall_s": 201.4, "max_rss_mb": 2100.0, "metric": 0.71, "rc": 0}]
            },
        },
    }
    md, page, svgs = render([("run", manifest())], {"run": goals})
    assert (
        "### Goals (python -m bench)" in md
        and "| 1 size | teacher fp32 ONNX / pruned int8 ONNX (bytes) | - | 21.40x | >= 20x | met |" in md
    )
    assert "| 16 tokens, batch 1 | 0.250 | - |" in md and "| batch 4, 64 tokens | 3.200 | 0.800 |" in md
    assert "| batch 32, 64 tokens, 1 thread(s) | - | 0.800 |" in md  # 1e3 / 1250 sequences per second
    assert "| 1000 | 201 | 2100 | 0.7100 |" in md and "<svg" in svgs["scaling_run"] and "Test CPU" in page
    assert "Goals (python -m bench)" not in render([("run", manifest())])[0]
    (tmp_path / "goals.json").write_text('{"schema": 1}')
    assert report.load_goals(tmp_path) is None and report.load_goals(tmp_path / "absent") is None
