"""The manifest contract (edgepipe/manifest.py) on the small fixture manifest: no run, no CLI.

Every expected number is read off tests/fixtures/README.md, not recomputed with the code's formula.
"""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures import MANIFEST, manifest, manifest_dict

from edgepipe.errors import RunDirError
from edgepipe.manifest import Benchmark, Manifest, earlier_benchmarks
from edgepipe.measurement import Measured

ARTIFACTS = [
    ("teacher", "onnx_fp32"),
    ("teacher", "tflite_fp32"),
    ("teacher", "tflite_int8"),
    ("student", "onnx_fp32"),
    ("pruned", "onnx_fp32"),
    ("pruned", "onnx_int8"),
    ("pruned", "tflite_fp32"),
    ("pruned", "tflite_int8"),
    ("pruned", "ort"),
]


@pytest.fixture
def run_dir(tmp_path):
    """A run dir of its own holding a copy of the fixture manifest."""
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(MANIFEST, d / "manifest.json")
    return d


def _row(rows: list[Benchmark], device: str, model: str, artifact: str, threads: int = 1) -> Benchmark:
    return next(b for b in rows if (b.device, b.model, b.artifact, b.threads) == (device, model, artifact, threads))


# -- reading and writing ---------------------------------------------------------------------------


def test_load_then_to_dict_gives_back_every_key(run_dir):
    raw = json.loads((run_dir / "manifest.json").read_text())
    m = Manifest.load(run_dir)
    assert m.to_dict() == raw
    # stage reports and runner keys without a field of their own are kept, not dropped
    assert m.models["pruned"].get("recovery") == {
        "steps": 13,
        "examples_seen": 416,
        "final_loss": 0.185873880982399,
        "seconds": 0.3,
    }
    assert m.models["pruned"].artifacts["ort"].get("target_platform") == "arm"
    assert _row(m.benchmarks, "x86", "pruned", "onnx_int8").get("metric_value") == 0.855
    # an optional key nobody wrote stays out (the student's fp32 ONNX has no test_accuracy)
    assert "test_accuracy" not in m.to_dict()["models"]["student"]["artifacts"]["onnx_fp32"]
    # save writes back the same document
    m.save(run_dir)
    assert json.loads((run_dir / "manifest.json").read_text()) == raw


def test_keys_a_newer_release_adds_survive_a_round_trip():
    raw = manifest_dict()
    raw["fleet_report"] = {"boards": 3}
    raw["models"]["pruned"]["distilled_from"] = "teacher"
    raw["models"]["pruned"]["artifacts"]["onnx_int8"]["calibration_seconds"] = 4.5
    raw["benchmarks"][0]["energy_mj"] = 12.5
    raw["benchmarks"][0]["latency_ms"]["p999"] = 14.0
    assert Manifest.parse(json.loads(json.dumps(raw))).to_dict() == raw


def test_a_missing_manifest_is_a_one_line_run_dir_error(tmp_path):
    with pytest.raises(RunDirError) as e:
        Manifest.load(tmp_path)
    assert str(e.value) == f"{tmp_path} has no manifest.json; run compress-and-export --out {tmp_path} first"
    assert e.value.exit_code == 7
    assert earlier_benchmarks(tmp_path) == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"version": "0.1.0", "models": {', b"\xff\xfe\x00garbage", b""],
    ids=["not-json", "truncated", "not-utf8", "empty"],
)
def test_a_corrupt_manifest_is_a_one_line_run_dir_error(run_dir, content):
    (run_dir / "manifest.json").write_bytes(content)
    with pytest.raises(RunDirError) as e:
        Manifest.load(run_dir)
    path = run_dir / "manifest.json"
    assert str(e.value) == f"{path} is corrupt; rerun compress-and-export --out {run_dir} to rebuild it"
    assert earlier_benchmarks(run_dir) == []


def test_json_that_is_not_a_manifest_names_the_first_bad_key(run_dir):
    path = run_dir / "manifest.json"
    raw = manifest_dict()
    del raw["version"]
    path.write_text(json.dumps(raw))
    with pytest.raises(RunDirError) as e:
        Manifest.load(run_dir)
    assert str(e.value) == f"{path} is not an edgepipe manifest (version: Field required); rerun compress-and-export"

    raw = manifest_dict()
    del raw["benchmarks"][3]["threads"]
    path.write_text(json.dumps(raw))
    with pytest.raises(RunDirError) as e:
        Manifest.load(run_dir)
    assert "(benchmarks.3.threads: Field required)" in str(e.value) and "\n" not in str(e.value)


# -- what readers ask ------------------------------------------------------------------------------


def test_readers_questions_on_the_fixture():
    m = manifest()
    assert m.name == "reviews.csv" and m.metric == "accuracy" and m.shipped == "pruned"
    assert m.artifact("pruned", "ort").bytes == 320_000 and m.artifact("student", "ort") is None
    assert m.artifact("distilled", "onnx_fp32") is None
    assert len(m.benchmarks) == 21  # 9 artifacts on x86, the same 9 on the board, 3 at 2 threads
    assert [(b.device, b.threads) for b in m.benchmarks_of("pruned", "onnx_int8")] == [
        ("x86", 1),
        ("arm:pi@board", 1),
        ("x86", 2),
    ]
    assert [b.latency_ms.p50 for b in m.benchmarks_of("pruned", "onnx_int8", "arm:pi@board")] == [50.0]
    arm = _row(m.benchmarks, "arm:pi@board", "pruned", "tflite_int8")
    assert arm.emulated == "qemu-user" and arm.device_label == "arm:pi@board (emulated: qemu-user)"
    x86 = _row(m.benchmarks, "x86", "pruned", "tflite_int8")
    assert x86.emulated is None and x86.device_label == "x86" and x86.score == 0.87


def test_shipped_is_the_smallest_model_of_the_ladder_and_metric_defaults_to_accuracy():
    raw = manifest_dict()
    del raw["models"]["pruned"]
    assert Manifest.parse(raw).shipped == "student"
    del raw["models"]["student"]
    assert Manifest.parse(raw).shipped == "teacher"
    del raw["task"]
    assert Manifest.parse(raw).metric == "accuracy"
    raw["task"] = {"name": "sequence_regression", "metric": "spearman"}
    assert Manifest.parse(raw).metric == "spearman"


def test_score_falls_back_to_accuracy_in_manifests_from_before_tasks():
    raw = manifest_dict()
    row = raw["benchmarks"][5]  # x86 pruned onnx_int8, metric_value 0.855
    del row["metric"], row["metric_value"]
    row["accuracy"] = 0.8
    assert Manifest.parse(raw).benchmarks[5].score == 0.8


def test_a_row_from_a_device_result_takes_the_runner_fields_and_the_tags():
    result = Measured(
        device="arm:pi@board",
        device_info={"kind": "arm", "emulated": None},
        runtime="litert",
        threads=1,
        seq_len=64,
        batch=1,
        latency_ms={"p50": 20.0, "n": 5},
        metric="accuracy",
        metric_value=0.87,
        n_eval=200,
        python="3.11.2",  # a runner key that stays in the stage record, not in the row
    )
    row = Benchmark.from_result(result, "pruned", "tflite_int8", "ab" * 32, {"rack": "2"})
    assert row.identity() == ("arm:pi@board", "pruned", "tflite_int8", 1, 1, 64, 200)
    assert row.device_info == {"kind": "arm", "emulated": None, "tags": {"rack": "2"}}
    assert row.artifact_sha256 == "ab" * 32 and row.score == 0.87 and row.get("python") is None


# -- one row per identity; rows carried over only for unchanged artifacts --------------------------


def test_upsert_benchmark_replaces_the_row_with_the_same_identity():
    m = manifest()
    first = _row(m.benchmarks, "x86", "pruned", "onnx_int8")
    index = m.benchmarks.index(first)
    again = first.model_copy(update={"latency_ms": first.latency_ms.model_copy(update={"p50": 0.9})})
    m.upsert_benchmark(again)
    assert len(m.benchmarks) == 21 and m.benchmarks[index].latency_ms.p50 == 0.9

    older = first.model_copy(update={"latency_ms": first.latency_ms.model_copy(update={"p50": 0.7})})
    m.upsert_benchmark(older, replace=False)  # an old row only fills a gap
    assert len(m.benchmarks) == 21 and m.benchmarks[index].latency_ms.p50 == 0.9

    # another thread count or evaluation size is another identity: appended
    m.upsert_benchmark(first.model_copy(update={"threads": 4}))
    m.upsert_benchmark(first.model_copy(update={"n_eval": 100}), replace=False)
    assert len(m.benchmarks) == 23
    assert [(b.threads, b.n_eval) for b in m.benchmarks[-2:]] == [(4, 200), (1, 100)]


def test_keep_benchmarks_keeps_only_rows_whose_artifact_is_unchanged():
    earlier = manifest().benchmarks
    # the new run measured x86 at 1 thread only; its pruned int8 ONNX ran at 1.0 ms
    now = manifest(benchmarks=manifest_dict()["benchmarks"][:9])
    # since the earlier rows: the board's TFLite int8 row was of a file rebuilt since, and the
    # earlier x86 row of the int8 ONNX said 5.0 ms
    _row(earlier, "arm:pi@board", "pruned", "tflite_int8").artifact_sha256 = "0" * 64
    stale = _row(earlier, "x86", "pruned", "onnx_int8")
    stale.latency_ms = stale.latency_ms.model_copy(update={"p50": 5.0})

    now.keep_benchmarks(earlier)
    kept = [(b.device, b.model, b.artifact, b.threads) for b in now.benchmarks[9:]]
    arm = [("arm:pi@board", role, art, 1) for role, art in ARTIFACTS if (role, art) != ("pruned", "tflite_int8")]
    t2 = [("x86", "teacher", "onnx_fp32", 2), ("x86", "pruned", "onnx_int8", 2), ("x86", "pruned", "tflite_int8", 2)]
    assert kept == arm + t2  # 8 board rows + 3 two-thread rows
    assert _row(now.benchmarks, "x86", "pruned", "onnx_int8").latency_ms.p50 == 1.0  # this run's row wins


def test_keep_benchmarks_drops_rows_of_a_model_the_new_run_does_not_have():
    raw = manifest_dict()
    del raw["models"]["student"]
    raw["benchmarks"] = []
    now = Manifest.parse(raw)
    now.keep_benchmarks(manifest().benchmarks)
    assert len(now.benchmarks) == 19 and not [b for b in now.benchmarks if b.model == "student"]


def test_keep_benchmarks_drops_rows_that_name_no_artifact_sha():
    """Regression: a row without artifact_sha256 (older manifests) matched an artifact this run does not have (None == None)."""
    raw = manifest_dict()
    raw["benchmarks"] = []
    now = Manifest.parse(raw)  # its student has no onnx_int8
    row = (
        manifest()
        .benchmarks[0]
        .model_copy(update={"model": "student", "artifact": "onnx_int8", "artifact_sha256": None})
    )
    now.keep_benchmarks([row])
    assert now.benchmarks == []


@pytest.mark.parametrize("content", ["[]", "null", "3"])
def test_json_that_is_not_an_object_is_not_a_manifest(run_dir, content):
    (run_dir / "manifest.json").write_text(content)
    with pytest.raises(RunDirError, match=r"is not an edgepipe manifest \(a JSON object is expected\)"):
        Manifest.load(run_dir)


def test_earlier_benchmarks_reads_the_rows_of_the_previous_manifest(run_dir):
    rows = earlier_benchmarks(run_dir)
    assert len(rows) == 21 and rows[9].device == "arm:pi@board" and rows[9].latency_ms.p50 == 400.0
