"""Data-parallel training (#10), for real: 2 CPU processes on the gloo backend, started by
`torchrun` and by `accelerate launch`, against a 1-process run of the same config.

Dropout is off in the student (`student.dropout=0`): with it on, each process draws masks for
its own share of a batch, so N-process and 1-process runs agree only statistically.
The teacher keeps its (random) head (`teacher.finetune=never`) so both runs distil from the same
teacher; it is no better than the majority baseline, hence `--allow-weak-teacher`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, make_tiny_bert, run_cli, write_sentiment_csv

pytestmark = pytest.mark.e2e

ARGS = [
    "--set",
    "teacher.finetune=never",
    "--allow-weak-teacher",  # its head is random: distillation is what is compared, not accuracy
    "--set",
    "distill.augment=0",  # texts without labels make each share's CE mean its own (edgepipe.model.train)
    "--set",
    "data.val_size=100",
    "--set",
    "data.test_size=100",
    "--set",
    "student.layers=[1]",
    "--set",
    "distill.max_steps=40",
    "--set",
    "distill.lr=3e-3",
    "--set",
    "student.dropout=0",
    "--set",
    "prune.recovery_max_steps=20",
    "--set",
    "prune.importance_batches=5",
    "--set",
    "quantize.enabled=false",
    "--set",
    "export.tflite=false",
    "--set",
    "bench.runs=10",
    "--set",
    "bench.warmup=2",
    "--train-threads",
    "1",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    teacher = make_tiny_bert(d / "teacher", head_labels=["neg", "pos"])
    csv = write_sentiment_csv(d / "reviews.csv")
    args = ["--teacher", str(teacher), "--data", str(csv), *ARGS, "--cache-dir", str(d / "cache")]
    one = run_cli("--out", str(d / "one"), *args)
    assert one.returncode == 0, one.stderr[-3000:]
    return d, args


def launch(launcher: str, out: Path, args: list[str]) -> subprocess.CompletedProcess:
    cli = str(BIN / "compress-and-export")
    if launcher == "torchrun":
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--no-python", cli]
    else:
        cmd = [
            str(BIN / "accelerate"),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--no_python",
            cli,
        ]
    return subprocess.run([*cmd, "--out", str(out), *args], capture_output=True, text=True, timeout=600)


def logits(run: Path, role: str, data: str) -> np.ndarray:
    from edgepipe.model.task_model import load_model
    from edgepipe.model.train import predict
    from edgepipe.tokenized import TokenizedSplit

    split = TokenizedSplit(
        **{
            k: np.load(run / "data" / data / f"{k}.npy")
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
        }
    )
    return predict(load_model(run / role), split)


@pytest.fixture(scope="module")
def torchrun_run(setup):
    d, args = setup
    proc = launch("torchrun", d / "torchrun", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d / "torchrun", proc


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_train_the_same_models_as_one(setup, launcher, request):
    d, args = setup
    if launcher == "torchrun":
        out, proc = request.getfixturevalue("torchrun_run")
    else:
        out = d / launcher
        proc = launch(launcher, out, args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 reports, the other rank stays quiet
    one, two = json.loads((d / "one" / "manifest.json").read_text()), json.loads((out / "manifest.json").read_text())
    assert two["models"]["student"]["train"]["processes"] == 2 and "processes" not in one["models"]["student"]["train"]
    assert two["models"]["pruned"]["recovery"]["processes"] == 2
    for role, data in (("student", "test"), ("pruned", "test_pruned")):
        a, b = logits(d / "one", role, data), logits(out, role, data)
        assert np.abs(a).max() > 0.1  # trained, not near-zero logits that would agree trivially
        np.testing.assert_allclose(b, a, atol=1e-4 * np.abs(a).max())
        assert two["models"][role]["accuracy"] == one["models"][role]["accuracy"]
    assert two["models"]["pruned"]["heads_per_layer"] == one["models"]["pruned"]["heads_per_layer"]
    assert sorted(p.name for p in out.glob("*.json")) == ["manifest.json"] and not list(out.rglob(".*.tmp"))


def test_two_process_run_resumes(setup, torchrun_run):
    """A rerun with the same launcher reuses every training stage."""
    _, args = setup
    out, _ = torchrun_run
    proc = launch("torchrun", out, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("distill", "prune", "eval_student"):
        assert f"✓ {stage} (reused)" in proc.stderr
