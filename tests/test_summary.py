"""The terminal summary (edgepipe/app/summary.py) rendered to text from the fixture manifest.

Expected cells are read off tests/fixtures/README.md and formatted by hand.
"""

from __future__ import annotations

import io

from fixtures import manifest, manifest_dict
from rich.console import Console

from edgepipe.app.summary import bench_table, check_cell, summary_table
from edgepipe.manifest import Manifest
from edgepipe.measurement import Measured

ARM = "arm:pi@board (emulated: qemu-user)"


def cells(table) -> list[list[str]]:
    """The table's body rows as rendered in a 200-column terminal, one list of stripped cells per row."""
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    text = console.export_text()
    return [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def test_summary_has_a_row_per_artifact_and_device_with_model_facts_once():
    rows = cells(summary_table(manifest()))
    assert len(rows) == 21  # every one of the 21 benchmark rows, no wrapped lines
    # model facts only on a model's first row
    assert rows[0] == [
        "teacher",
        "2.00",
        "5",
        "90.0%",
        "onnx_fp32",
        "8.0",
        "1.5e-07",
        "x86",
        "1",
        "10.00",
        "12.00",
        "12.90",
        "90.0%",
    ]
    assert rows[1] == ["", "", "", "", "onnx_fp32", "8.0", "1.5e-07", ARM, "1", "400.00", "480.00", "516.00", "90.0%"]
    assert rows[2][4:] == ["onnx_fp32", "8.0", "1.5e-07", "x86", "2", "6.00", "7.20", "7.74", "90.0%"]
    assert [r[0] for r in rows if r[0]] == ["teacher", "student", "pruned"]
    student = next(r for r in rows if r[0] == "student")
    assert student[:4] == ["student", "1.00", "3", "88.0%"]  # 2.6 M MACs
    pruned = next(r for r in rows if r[0] == "pruned")
    assert pruned[:4] == ["pruned", "0.25", "1", "86.0%"]  # 1.28 M MACs


def test_summary_cells_of_int8_artifacts_and_the_emulated_board():
    rows = cells(summary_table(manifest()))
    by = {(r[4], r[7], r[8]): r for r in rows[9:]}  # 7 teacher rows, 2 student rows, then the pruned model's
    # int8 ONNX: agreement with fp32, the board's own (lower) metric, p90 = 1.2 x p50, p99 = 1.29 x p50
    assert by[("onnx_int8", "x86", "1")][5:] == ["0.5", "99.5%", "x86", "1", "1.00", "1.20", "1.29", "85.5%"]
    assert by[("onnx_int8", ARM, "1")][5:] == ["0.5", "99.5%", ARM, "1", "50.00", "60.00", "64.50", "85.0%"]
    assert by[("tflite_int8", "x86", "2")][5:] == ["0.4", "99.0%", "x86", "2", "0.25", "0.30", "0.32", "87.0%"]
    # the ORT artifact's check is its agreement with the int8 ONNX it was converted from
    assert by[("ort", "x86", "1")][5:7] == ["0.3", "100.0%"]


def test_an_artifact_without_a_benchmark_still_gets_a_row():
    raw = manifest_dict()
    raw["benchmarks"] = [b for b in raw["benchmarks"] if b["model"] != "student"]
    rows = cells(summary_table(Manifest.parse(raw)))
    assert len(rows) == 20  # 21 rows less the student's two, plus one row without a device
    assert next(r for r in rows if r[0] == "student") == [
        "student",
        "1.00",
        "3",
        "88.0%",
        "onnx_fp32",
        "4.0",
        "3.0e-07",
        "-",
        "-",
        "-",
        "-",
        "-",
        "-",
    ]


def test_summary_title_names_the_ladder():
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(summary_table(manifest()))
    assert console.export_text().splitlines()[0].strip() == "edgepipe: teacher -> student -> pruned"


def test_check_cell_parity_then_agreement_then_nothing():
    m = manifest()
    assert check_cell(m.artifact("teacher", "onnx_fp32")) == "1.5e-07"
    assert check_cell(m.artifact("teacher", "tflite_int8")) == "98.0%"
    assert check_cell(m.artifact("pruned", "ort")) == "100.0%"  # argmax_agreement_vs_onnx


def test_bench_table_labels_an_emulated_device():
    result = Measured(
        device="arm:pi@board",
        device_info={"emulated": "qemu-user"},
        model="pruned.int8.tflite",
        runtime="litert",
        runtime_version="2.3.0",
        delegate="XNNPACK",
        threads=1,
        seq_len=64,
        batch=1,
        latency_ms={"p50": 20.0, "p90": 24.0, "p99": 25.8, "mean": 20.8, "n": 5},
        metric="accuracy",
        metric_value=0.87,
        n_eval=200,
    )
    assert cells(bench_table([result])) == [
        [
            ARM,
            "pruned.int8.tflite",
            "litert 2.3.0",
            "XNNPACK",
            "1",
            "20.00",
            "24.00",
            "25.80",
            "20.80",
            "accuracy 87.00%",
            "200",
        ]
    ]


def test_the_summary_starts_with_the_baseline_and_says_the_margin_kept():
    from edgepipe.app.summary import baseline_caption

    base = {"name": "majority", "metric": 0.6, "majority": 0.6, "stratified": 0.52, "n_test": 200}
    m = manifest(baseline=base | {"teacher": {"value": 0.9, "margin": 0.3, "p_value": 1e-20, "beats": True}})
    m.models["pruned"].baseline_margin_kept = 0.8
    assert baseline_caption(m) == (
        "majority baseline 60.0% test accuracy; teacher +30.0 points (p=1e-20); pruned kept 80% of the teacher's margin"
    )
    console = Console(width=300, record=True)
    console.print(summary_table(m))
    lines = console.export_text().splitlines()
    first_row = next(line for line in lines if "no model" in line)
    assert "no model (majority)" in first_row and "60.0%" in first_row
