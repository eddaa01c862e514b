"""The bad-input catalogue: every case is a real command a user could type, answered with one
line that says what is wrong and how to fix it, a non-zero exit code, and no traceback.

Device cases (unreachable board, wrong key, host-key mismatch, no adb device, two devices,
a device dropping mid-run) live in test_device_runners.py, which has the board and phone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, TINY_RUN, make_tiny_bert, run_cli, run_cli_in_process, write_sentiment_csv

pytestmark = pytest.mark.e2e

# A meta-path finder that makes chosen distributions look uninstalled (for the "missing
# optional runtime" cases): imported via sitecustomize when its folder is on PYTHONPATH.
BLOCKER = """
import os, sys
BLOCKED = set(filter(None, os.environ.get("EDGEPIPE_TEST_UNINSTALL", "").split(",")))
class _Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Uninstalled())
"""


def one_line(proc: subprocess.CompletedProcess, needle: str, code: int) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]


def edgepipe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "edgepipe"), *args], capture_output=True, text=True, timeout=300, env=env)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


# (id, files to create {name: content}, extra CLI args with {d} = the case dir, expected message, exit code)
CASES = [
    (
        "teacher-missing",
        {},
        ["--teacher", "{d}/nope"],
        "does not exist; pass a local Hugging Face model dir to --teacher",
        4,
    ),
    (
        "teacher-empty",
        {"t/.keep": ""},
        ["--teacher", "{d}/t"],
        "has no config.json; pass a Hugging Face model directory",
        4,
    ),
    (
        "teacher-not-a-dir",
        {"t": "x"},
        ["--teacher", "{d}/t"],
        "is a file; pass the directory that holds config.json",
        4,
    ),
    (
        "teacher-gpt2",
        {"t/config.json": '{"model_type": "gpt2"}', "t/vocab.txt": "[PAD]\n[UNK]\n"},
        ["--teacher", "{d}/t"],
        "is a decoder-only language model (model_type 'gpt2'); edgepipe compresses encoders",
        4,
    ),
    (
        "teacher-llama",
        {"t/config.json": '{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}', "t/tokenizer.json": "{}"},
        ["--teacher", "{d}/t"],
        "is a decoder-only language model (model_type 'llama')",
        4,
    ),
    (
        "teacher-t5",
        {"t/config.json": '{"model_type": "t5"}', "t/tokenizer.json": "{}"},
        ["--teacher", "{d}/t"],
        "is a 't5' model; edgepipe needs an encoder",
        4,
    ),
    (
        "teacher-hub-id-not-cached",
        {},
        ["--teacher", "nobody-here/not-a-cached-model"],
        "--teacher nobody-here/not-a-cached-model is not a local directory and not in the Hugging Face cache",
        4,
    ),
    (
        "teacher-config-not-json",
        {"t/config.json": "{oops", "t/vocab.txt": "[PAD]\n"},
        ["--teacher", "{d}/t"],
        "config.json",
        4,
    ),
    ("data-missing", {}, ["--data", "{d}/none.csv"], "does not exist", 3),
    ("data-empty", {"e.csv": ""}, ["--data", "{d}/e.csv"], "is empty", 3),
    ("data-header-only", {"e.csv": "text,label\n"}, ["--data", "{d}/e.csv"], "has a header but no rows", 3),
    (
        "data-not-utf8",
        {"b.csv": b"text,label\n\xff\xfe bad,pos\nok,neg\n"},
        ["--data", "{d}/b.csv"],
        "is not UTF-8 (bad byte at line 2)",
        3,
    ),
    (
        "data-missing-columns",
        {"c.csv": "review,stars\ngreat,5\nbad,1\n"},
        ["--data", "{d}/c.csv"],
        "has no column 'text', 'label'",
        3,
    ),
    (
        "data-single-class",
        {"s.csv": "text,label\n" + "".join(f"row {i},pos\n" for i in range(50))},
        ["--data", "{d}/s.csv"],
        "has a single class ('pos')",
        3,
    ),
    (
        "data-bad-jsonl",
        {"b.jsonl": '{"text": "a", "label": "pos"}\n{not json\n'},
        ["--data", "{d}/b.jsonl"],
        "line 2 is not valid JSON",
        3,
    ),
    (
        # texts with commas in a `;`-separated file, and a column named otherwise: was a TypeError
        "data-semicolon-wrong-column",
        {"s.csv": "review;label\nGreat, really great;pos\nBad, bad, bad;neg\n"},
        ["--data", "{d}/s.csv"],
        "has no column 'text' (columns: review, label)",
        3,
    ),
    (
        "data-xlsx",
        {"d.xlsx": b"PK\x03\x04\x14\x00\x06\x00"},
        ["--data", "{d}/d.xlsx"],
        "is a spreadsheet; save it as CSV UTF-8 (File > Save As) and pass the .csv",
        3,
    ),
    ("data-bad-delimiter", {}, ["--set", "data.delimiter=;;"], "data.delimiter: must be one character", 2),
    (
        "data-unknown-format",
        {"d.parquet": "x"},
        ["--data", "{d}/d.parquet"],
        "'.parquet' is not a supported format; convert it to .csv or .jsonl",
        3,
    ),
    ("yaml-unknown-key", {"c.yaml": "distil:\n  alpha: 0.5\n"}, ["--config", "{d}/c.yaml"], "unknown key 'distil'", 2),
    (
        "yaml-wrong-type",
        {"c.yaml": "distill:\n  epochs: lots\n"},
        ["--config", "{d}/c.yaml"],
        "distill.epochs: Input should be a valid number",
        2,
    ),
    (
        "yaml-temperature-zero",
        {"c.yaml": "distill:\n  temperature: 0\n"},
        ["--config", "{d}/c.yaml"],
        "distill.temperature: Input should be greater than 0",
        2,
    ),
    (
        "yaml-alpha-above-one",
        {"c.yaml": "distill:\n  alpha: 1.5\n"},
        ["--config", "{d}/c.yaml"],
        "distill.alpha: Input should be less than or equal to 1",
        2,
    ),
    (
        "yaml-prune-ratio-one",
        {"c.yaml": "prune:\n  heads: 1.0\n"},
        ["--config", "{d}/c.yaml"],
        "prune.heads: Input should be less than 1",
        2,
    ),
    (
        "yaml-calibration-zero",
        {"c.yaml": "quantize:\n  calibration_examples: 0\n"},
        ["--config", "{d}/c.yaml"],
        "quantize.calibration_examples: Input should be greater than 0",
        2,
    ),
    ("yaml-syntax", {"c.yaml": "distill: [\n"}, ["--config", "{d}/c.yaml"], "is not valid YAML at line 2", 2),
    ("yaml-missing", {}, ["--config", "{d}/none.yaml"], "does not exist; pass an existing YAML file", 2),
    ("yaml-not-a-mapping", {"c.yaml": "- 1\n- 2\n"}, ["--config", "{d}/c.yaml"], "must hold a mapping of sections", 2),
    ("set-without-value", {}, ["--set", "distill.alpha"], "expected KEY=VALUE", 2),
    (
        "set-code-is-not-evaluated",
        {},
        ["--set", "distill.alpha=__import__('os').system('touch {d}/PWNED')"],
        "distill.alpha",
        2,
    ),
    (
        "prune-all-layers",
        {},
        ["--set", "student.layers=[0]", "--set", "prune.layers=1"],
        "would remove all 1 student layers",
        2,
    ),
    ("bench-seq-too-long", {}, ["--set", "bench.seq_len=128"], "exceeds data.max_length", 2),
    ("unknown-device", {}, ["--devices", "ios:phone"], "unknown device 'ios:phone'", 2),
    ("hostile-device", {}, ["--devices", "arm:pi@board;reboot"], "expected arm:USER@HOST", 2),
    ("bad-core-list", {}, ["--set", "bench.pin_cores=0;reboot"], "bench.pin_cores", 2),
    ("task-unknown", {}, ["--task", "ranking"], "unknown task 'ranking'; edgepipe knows", 2),
    ("pairs-on-the-built-in-data", {}, ["--task", "pair_classification"], "the built-in data has one text per row", 3),
    (
        "pairs-without-a-second-text",
        {"d.csv": "text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))},
        ["--data", "{d}/d.csv", "--task", "pair_classification"],
        "needs a second text, but data file",
        3,
    ),
    (
        "pairs-with-single-unlabeled-texts",
        {
            "d.csv": "text_a,text_b,label\n" + "".join(f"a {i},b {i},{'xy'[i % 2]}\n" for i in range(40)),
            "u.txt": "one more text\n",
        },
        ["--data", "{d}/d.csv", "--unlabeled", "{d}/u.txt"],
        "holds single texts, but task pair_classification's examples are pairs",
        3,
    ),
    (
        "multi-label-with-one-label-per-row",
        {"d.csv": "text,labels\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(40))},
        ["--data", "{d}/d.csv"],
        "has one label per row, none with several ('|'-separated); that is sequence classification",
        3,
    ),
    (
        "multi-label-with-one-label-in-all-rows",
        {"d.csv": "text,labels\n" + "".join(f"text {i},a|a\n" for i in range(40))},
        ["--data", "{d}/d.csv"],
        "has a single label ('a') in every row; multi_label needs at least two",
        3,
    ),
    (
        "tags-without-tokens",
        {"d.jsonl": "".join('{"words": ["a"], "tags": ["B-X"]}\n' for _ in range(3))},
        ["--data", "{d}/d.jsonl", "--task", "token_classification"],
        "needs columns 'tokens' and 'tags'",
        3,
    ),
    ("out-is-a-file", {"o": "x"}, ["--out", "{d}/o"], "is a file, not a directory", 7),
    ("out-unwritable", {}, ["--out", "/sys/edgepipe-run"], "is not writable", 7),
]


@pytest.mark.parametrize("name, files, args, needle, code", CASES, ids=[c[0] for c in CASES])
def test_compress_and_export_bad_input(tmp_path, name, files, args, needle, code):
    for rel, content in files.items():
        write(tmp_path / rel, content)
    argv = [a.replace("{d}", str(tmp_path)) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    proc = run_cli_in_process(*argv, cache=tmp_path / "cache")
    one_line(proc, needle, code)
    assert not (tmp_path / "PWNED").exists()


def test_corrupt_teacher_weights(tmp_path):
    teacher = make_tiny_bert(tmp_path / "t")
    data = (teacher / "model.safetensors").read_bytes()
    (teacher / "model.safetensors").write_bytes(data[: len(data) // 3])
    proc = run_cli_in_process(
        "--teacher",
        str(teacher),
        "--data",
        str(write_sentiment_csv(tmp_path / "d.csv")),
        "--out",
        str(tmp_path / "o"),
        *TINY_RUN,
        cache=tmp_path / "cache",
    )
    one_line(proc, "model.safetensors", 4)


@pytest.mark.parametrize(
    "args, needle, detail",
    [
        ([], "teacher head has labels ['negative', 'positive'] but the data has ['neg', 'pos']", ""),
        (
            ["--task", "embedding"],
            "--task embedding needs a sentence encoder, but teacher",
            "has a trained classification head (2 labels)",
        ),
    ],
    ids=["labels-outside-the-head", "embedding-task-on-a-classifier"],
)
def test_a_teacher_with_a_classification_head_that_does_not_fit(tmp_path, args, needle, detail):
    teacher = make_tiny_bert(tmp_path / "clf", head_labels=["negative", "positive"])
    csv = write_sentiment_csv(tmp_path / "d.csv", labels=("neg", "pos"))
    proc = run_cli_in_process(
        "--teacher", str(teacher), "--data", str(csv), *args, "--out", str(tmp_path / "o"), cache=tmp_path / "c"
    )
    one_line(proc, needle, 4)
    assert detail in proc.stderr


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("trunc.onnx", "onnx-half", "cannot be loaded by onnxruntime"),
        ("garbage.onnx", b"not a model", "cannot be loaded by onnxruntime"),
        ("trunc.tflite", "tflite-half", "cannot be loaded by LiteRT"),
        ("model.pt", b"x", "unknown format (expected .onnx, .ort, .tflite or .pte)"),
    ],
)
def test_bench_refuses_corrupt_or_truncated_models(smoke_run, tmp_path, name, content, needle):
    out, _, _ = smoke_run
    if content == "onnx-half":
        data = (out / "onnx" / "pruned.int8.onnx").read_bytes()
        content = data[: len(data) // 2]
    elif content == "tflite-half":
        data = (out / "tflite" / "pruned.int8.tflite").read_bytes()
        content = data[: len(data) // 2]
    model = write(tmp_path / name, content)
    proc = edgepipe("bench", str(model), "--inputs", str(out / "data" / "test_pruned"), "--runs", "2")
    one_line(proc, needle, 6)


def test_bench_refuses_a_run_whose_artifact_changed(smoke_run, tmp_path):
    out, _, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    (copy / "run.lock").unlink(missing_ok=True)
    with open(copy / "onnx" / "pruned.int8.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    proc = edgepipe("bench", str(copy), "--artifacts", "onnx_int8", "--runs", "2")
    one_line(proc, "missing or changed since the run (sha256 mismatch)", 4)
    proc = edgepipe("bench", str(tmp_path / "nothing-here"))
    one_line(proc, "does not exist; pass a run directory or a model file", 2)
    proc = edgepipe("bench", str(out / "onnx" / "pruned.int8.onnx"))
    one_line(proc, "needs --inputs DIR", 2)
    proc = edgepipe("bench", str(copy), "--set", "distill.alpha=0.3")
    one_line(proc, "takes bench.* settings only", 2)
    # the artifacts were built for one sequence length: measuring them at another is refused, not recorded
    proc = edgepipe("bench", str(out), "--set", "bench.seq_len=32")
    one_line(proc, "were built for sequence length 64; bench.seq_len=32 does not match", 2)
    assert "--set export.seq_len=32" in proc.stderr


def _uninstalled(tmp_path: Path, *dists: str) -> dict:
    site = write(tmp_path / "blocker" / "sitecustomize.py", BLOCKER).parent
    return dict(os.environ, PYTHONPATH=str(site), EDGEPIPE_TEST_UNINSTALL=",".join(dists))


def test_missing_litert_runtime_names_the_install_command(smoke_run, tmp_path):
    out, _, _ = smoke_run
    env = _uninstalled(tmp_path, "ai_edge_litert")
    proc = edgepipe(
        "bench",
        str(out / "tflite" / "pruned.int8.tflite"),
        "--inputs",
        str(out / "data" / "test_pruned"),
        "--runs",
        "2",
        env=env,
    )
    one_line(proc, "ai-edge-litert is not installed on this device; install it with `pip install ai-edge-litert`", 6)


def test_missing_litert_torch_fails_before_training(tmp_path):
    env = _uninstalled(tmp_path, "litert_torch")
    proc = subprocess.run(
        [str(BIN / "compress-and-export"), "--smoke", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(env, EDGEPIPE_CACHE=str(tmp_path / "c")),
    )
    one_line(proc, "TFLite export needs litert-torch, which is not installed", 4)
    assert "--set export.tflite=false" in proc.stderr
    assert not (tmp_path / "o" / "stages" / "distill.json").exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")
def test_disk_full_while_writing_an_artifact_keeps_what_was_finished(tmp_path):
    """A 4 MB tmpfs: the run fails at the first artifact that does not fit, with one line, and what
    fit (stage records, eval inputs) stays valid for a rerun on a bigger disk."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount tmpfs here")
    try:
        teacher = make_tiny_bert(tmp_path / "t")
        csv = write_sentiment_csv(tmp_path / "d.csv")
        proc = run_cli(
            "--teacher",
            str(teacher),
            "--data",
            str(csv),
            "--out",
            str(mnt / "run"),
            *TINY_RUN,
            cache=tmp_path / "cache",
        )
        one_line(proc, "no space left on the device while writing", 7)
        leftovers = [p.name for p in (mnt / "run").rglob("*.tmp")]
        assert leftovers == []
        finished = sorted(p.name for p in (mnt / "run" / "stages").glob("*.json"))
        assert "eval_inputs_test.json" in finished
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_an_export_that_disagrees_with_pytorch_is_refused_in_one_line():
    import numpy as np

    from edgepipe.errors import ExportParityError
    from edgepipe.export.parity import parity_record

    ref = np.zeros((4, 2), np.float32)
    assert parity_record(ref, ref + 1e-6, 1e-4, "ONNX export m.onnx", "report a bug") == {
        "parity_max_abs": pytest.approx(1e-6),
        "parity_examples": 4,
    }
    for got in (ref + 0.5, ref * np.nan):
        with pytest.raises(ExportParityError) as e:
            parity_record(ref, got, 1e-4, "ONNX export m.onnx", "report a bug")
        assert "\n" not in str(e.value) and str(e.value).startswith("ONNX export m.onnx differs from PyTorch by ")
