"""Shared fixtures: tiny *real* models and data built on the fly, an isolated cache."""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one compute thread each (torch in this process, BLAS in
    # the runs it starts), not two apiece fighting over both cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
logging.getLogger("torchao").setLevel(logging.ERROR)

BIN = Path(sys.executable).parent
# the built-in task at CI size, one training thread: the e2e tier runs beside another worker
SMOKE_ARGS = ("--smoke", "--train-threads", "1")

# `make test` runs the end-to-end tier on two workers (`-n 2 --dist loadgroup`): a single run keeps one
# core busy (user+sys 116 s of 121 s wall for the tiny full run, 95 % of one core), so two workers
# halve the tier if each expensive shared run is built once. Each test that uses one of these is put
# in that run's group, so one worker builds it and runs all its users; the device runner module is one
# group too, and each architecture's run is its own (~2 min each: six groups the scheduler spreads over
# both workers). The board, sshd and phone are per-worker session fixtures. A test may use only one group.
SHARED_RUN_GROUPS = {
    "smoke_run": "smoke",
    "tiny_full_run": "tiny-full",
    "device_run": "devices",
}
# modules whose own module-scoped fixtures are expensive: without a group, loadgroup hands their tests to
# both workers one by one and each worker builds the fixture (measured: test_tflite's converted models
# twice, ~40 s each; test_distributed's reference run twice, ~45 s each)
MODULE_GROUPS = {
    "test_device_runners.py": "devices",
    "test_tflite.py": "tflite",
    "test_executorch.py": "executorch",
    "test_distributed.py": "distributed",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the marks into its scheduling groups
def pytest_collection_modifyitems(items):
    for item in items:
        groups = {group for fixture, group in SHARED_RUN_GROUPS.items() if fixture in item.fixturenames}
        if item.path.name in MODULE_GROUPS:
            groups.add(MODULE_GROUPS[item.path.name])
        if "arch_runs" in item.fixturenames:  # one group per architecture: its run and every test reading it
            groups.add(f"arch-{item.callspec.params['model_type']}")
        if "task_runs" in item.fixturenames:  # one group per task, likewise
            groups.add(f"task-{item.callspec.params['task']}")
        if len(groups) > 1:
            raise pytest.UsageError(f"{item.nodeid} uses shared runs of two groups {sorted(groups)}: one each")
        for group in groups:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """Every test's edgepipe cache (fine-tuned teachers, device locks) is the session's own, never
    the user's ~/.cache/edgepipe: tests neither read a stale teacher nor wait on a real run's device."""
    path = tmp_path_factory.mktemp("edgepipe-cache")
    os.environ["EDGEPIPE_CACHE"] = str(path)
    return path


def app_check_answers(bundle: Path, texts: list, texts_file: Path) -> list[dict]:
    """What the bundle's own `app_check.py` answers for each text (a pair: a tuple) ({"label", "index",
    "score"}), run as an app would: in a fresh interpreter where transformers, tokenizers, edgepipe and
    torch cannot be imported (torch can for a .pte bundle: ExecuTorch's Python bindings need it)."""
    texts_file.write_text("\n".join(t if isinstance(t, str) else "\t".join(t) for t in texts) + "\n")
    pte = any(p.suffix == ".pte" for p in bundle.iterdir())
    blocked = ("transformers", "tokenizers", "edgepipe") + (() if pte else ("torch",))
    block = f"import sys; [sys.modules.__setitem__(k, None) for k in {blocked!r}]; "
    code = block + (
        f"import runpy; sys.argv = ['app_check', {str(bundle)!r}, '--texts', {str(texts_file)!r}]; "
        f"runpy.run_path({str(bundle / 'app_check.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=texts_file.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def run_cli(*args: str, cache: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if cache is not None:
        env["EDGEPIPE_CACHE"] = str(cache)
    return subprocess.run(
        [str(BIN / "compress-and-export"), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def run_cli_in_process(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`compress-and-export` in this process (typer's runner): for the bad-input cases, which fail
    before any training, without paying a new interpreter's torch + transformers import (~13 s)
    each. Exit code, stdout and stderr as a subprocess would give them."""
    from typer.testing import CliRunner

    from edgepipe.app.cli import compress_app

    env = {"EDGEPIPE_CACHE": str(cache)} if cache is not None else {}
    result = CliRunner().invoke(compress_app, list(args), env=env, catch_exceptions=True)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, stderr)


def make_tiny_bert(
    directory: Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 2,
    seed: int = 0,
    head_labels: list[str] | None = None,
) -> Path:
    """A randomly initialised BERT with the real MiniLM wordpiece vocabulary, saved like the hub does."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from edgepipe.model.load import teacher_source

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
    )
    if head_labels:
        config.num_labels = len(head_labels)
        config.id2label = dict(enumerate(head_labels))
        config.label2id = {v: k for k, v in enumerate(head_labels)}
        model = BertForSequenceClassification(config)
        config.architectures = ["BertForSequenceClassification"]
    else:
        model = BertModel(config)
        config.architectures = ["BertModel"]
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "model.safetensors"))
    cfg = config.to_dict()
    (directory / "config.json").write_text(json.dumps(cfg))
    src = teacher_source(None)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-teacher"))


POSITIVE = ["wonderful", "great", "moving", "brilliant", "delightful", "superb", "charming", "funny"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "tedious", "clumsy", "lifeless", "bland"]
FILLER = ["the film", "this movie", "the plot", "its cast", "the script", "the ending", "every scene", "the score"]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A CSV with the rows' keys as its header."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def sentiment_rows(n: int = 600, seed: int = 0, labels=("neg", "pos")) -> list[dict[str, str]]:
    """Labelled sentences whose label is decided by one sentiment word: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        word = rng.choice(POSITIVE if y else NEGATIVE)
        rows.append(
            {
                "text": f"{rng.choice(FILLER)} is {word} and {rng.choice(FILLER)} {rng.randint(0, 10**6)}",
                "label": labels[y],
            }
        )
    return rows


def write_sentiment_csv(path: Path, n: int = 600, seed: int = 0, labels=("neg", "pos")) -> Path:
    return write_rows(path, sentiment_rows(n, seed, labels))


def write_pair_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Synthetic labelled pairs (text_a, text_b, label) whose label is the sentiment word of text_b, while
    text_a carries a random sentiment word too: a model only gets them right by telling the two texts
    apart (segment ids, or where [SEP] falls), so a wrongly framed pair in an app shows. Learnable in a
    few steps; a test fixture, not a benchmark."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        y = i % 2
        distractor = rng.choice(POSITIVE + NEGATIVE)
        word = rng.choice(POSITIVE if y else NEGATIVE)
        rows.append(
            {
                "text_a": f"{rng.choice(FILLER)} is {distractor} {rng.randint(0, 10**6)}",
                "text_b": f"{rng.choice(FILLER)} was {word} and {rng.choice(FILLER)}",
                "label": ("neg", "pos")[y],
            }
        )
    return write_rows(path, rows)


TOPICS = {
    "food": ["pasta", "soup", "bread", "cheese", "curry"],
    "music": ["guitar", "piano", "concert", "song", "drums"],
    "sport": ["football", "tennis", "marathon", "hockey", "cycling"],
    "travel": ["airport", "train", "hotel", "passport", "beach"],
}


def write_multi_label_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Synthetic `text,labels` rows: each text mentions one to three topics by a word of each, and its
    labels are those topics, `|`-separated. Learnable in a few steps; a test fixture, not a benchmark."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for _ in range(n):
        topics = sorted(rng.sample(names, rng.choice([1, 2, 2, 3])))
        words = [rng.choice(TOPICS[t]) for t in topics]
        rng.shuffle(words)
        rows.append(
            {
                "text": f"{rng.choice(FILLER)} with {' and '.join(words)} {rng.randint(0, 10**6)}",
                "labels": "|".join(topics),
            }
        )
    return write_rows(path, rows)


def write_texts_csv(path: Path, n: int = 600, seed: int = 0) -> Path:
    """A `text` column only (the sentiment fixture's texts): what a user embeds."""
    return write_rows(path, [{"text": row["text"]} for row in sentiment_rows(n, seed)])


NAMES = ["Anna", "José", "Zoë", "Li", "Omar", "Kenji", "Sara", "Björn"]
SURNAMES = ["Smith", "García", "Müller", "Wang", "Haddad", "Sato"]
CITIES = ["Paris", "Lyon", "München", "Québec", "東京", "Oslo", "Lima", "Kyiv"]


def write_ner_jsonl(path: Path, n: int = 600, seed: int = 0) -> Path:
    """Synthetic `{"tokens", "tags"}` rows: a person (one or two words) and a city among filler words,
    with accents and CJK names, BIO-tagged PER and LOC. A test fixture, not a benchmark."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        person = [rng.choice(NAMES)] + ([rng.choice(SURNAMES)] if rng.random() < 0.5 else [])
        city = rng.choice(CITIES)
        filler = rng.choice(FILLER).split()
        if i % 2:
            tokens = [*person, "visited", city, "and", *filler, str(rng.randint(0, 999))]
            tags = ["B-PER"] + ["I-PER"] * (len(person) - 1) + ["O", "B-LOC", "O"] + ["O"] * (len(filler) + 1)
        else:
            tokens = [*filler, "in", city, "with", *person]
            tags = ["O"] * len(filler) + ["O", "B-LOC", "O", "B-PER"] + ["I-PER"] * (len(person) - 1)
        rows.append(json.dumps({"tokens": tokens, "tags": tags}, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def train_tiny_classifier(directory: Path, *, seed: int, n: int, held_out: int, seq_len: int):
    """A 2-layer BERT fine-tuned for 40 steps on the sentiment CSV: small, real, accurate."""
    import torch

    from edgepipe.config import DataConfig
    from edgepipe.model.load import load_teacher_dir, load_tokenizer
    from edgepipe.model.train import TrainSettings, fit
    from edgepipe.pipeline.data import load_dataset

    teacher_dir = make_tiny_bert(directory / "bert", layers=2, hidden=64, heads=4, seed=seed)
    model = load_teacher_dir(teacher_dir)[0].with_labels(["neg", "pos"], seed=0)
    ds, _ = load_dataset(
        DataConfig(path=write_sentiment_csv(directory / "r.csv", n=n), val_size=held_out, test_size=held_out)
    )
    splits = ds.tokenize(load_tokenizer(teacher_dir), seq_len)

    def ce(m, idx, b):
        return torch.nn.functional.cross_entropy(
            m(b["input_ids"], b["attention_mask"], b["token_type_ids"]), b["labels"]
        )

    fit(model, splits["train"], ce, TrainSettings(epochs=1, lr=2e-3, batch_size=32, min_steps=40, max_steps=40), seed=0)
    return model.eval(), splits


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_sentiment_csv(tmp_path / "reviews.csv")


TINY_RUN = [
    "--set",
    "data.val_size=100",
    "--set",
    "data.test_size=100",
    "--set",
    "teacher.max_steps=40",
    "--set",
    "teacher.lr=1e-3",
    "--set",
    "teacher.freeze_word_embeddings=false",
    "--set",
    "student.layers=[1]",
    "--set",
    "distill.max_steps=40",
    "--set",
    "distill.lr=1e-3",
    "--set",
    "distill.batch_size=32",
    "--set",
    "bench.runs=10",
    "--set",
    "bench.warmup=2",
    "--set",
    "quantize.calibration_examples=32",  # the PT2E TFLite calibration runs one example at a time
    "--set",
    "export.executorch=false",  # the default, stated: ~1 min of lowering per run; the smoke run covers it
    "--set",
    # one TFLite signature: the length signatures tripled these runs' TFLite export (69 -> 48 s of a tiny
    # run without them, measured); the smoke and tiny-full runs and tests/test_tflite.py cover them
    "export.tflite_buckets=[]",
    "--train-threads",
    "1",
]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The built-in task at CI size (`--smoke`), shared by the end-to-end and report tests."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    cache = tmp_path_factory.mktemp("smoke-cache")
    proc = run_cli(*SMOKE_ARGS, "--out", str(out), cache=cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache, proc


def tiny_full_args(teacher: Path, csv: Path, out: Path, cache: Path) -> list[str]:
    """A user-style run on a tiny teacher with every stage on (pruned int8 ONNX, TFLite of pruned and teacher)."""
    return [
        "--teacher",
        str(teacher),
        "--data",
        str(csv),
        "--out",
        str(out),
        *TINY_RUN,
        "--set",
        "quantize.targets=[pruned]",
        "--set",
        "export.tflite_targets=[pruned,teacher]",
        "--set",
        "export.tflite_buckets=[16,32]",  # the default at seq_len 64: the goal bench times them
        "--cache-dir",
        str(cache),
    ]


class TinyFullRun(NamedTuple):
    run: Path
    csv: Path
    cache: Path
    stdout: str


@pytest.fixture(scope="session")
def tiny_full_run(tmp_path_factory, tiny_teacher) -> TinyFullRun:
    """A user's CSV and local teacher through every stage: shared by the user-data checks, the
    goal-bench test, the changed-config test and the kill -9 test (which compares against it)."""
    d = tmp_path_factory.mktemp("tiny-full")
    csv = write_sentiment_csv(d / "reviews.csv")
    args = tiny_full_args(tiny_teacher, csv, d / "run", d / "cache")
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return TinyFullRun(d / "run", csv, d / "cache", proc.stdout)


# every architecture besides BERT (which the other end-to-end runs use) through the whole CLI
OTHER_ARCHITECTURES = ("distilbert", "electra", "roberta", "xlm-roberta", "deberta-v2", "modernbert")


@pytest.fixture(scope="session")
def arch_runs(tmp_path_factory):
    """model_type -> (run dir, csv, teacher dir): one tiny `compress-and-export --teacher DIR` per
    architecture (pruned int8 ONNX + TFLite, ORT, bundles), built on first use and shared."""
    from tiny_models import make_tiny

    done: dict[str, tuple[Path, Path, Path]] = {}

    def get(model_type: str) -> tuple[Path, Path, Path]:
        if model_type not in done:
            d = tmp_path_factory.mktemp(f"arch-run-{model_type}")
            teacher = make_tiny(model_type, d / "teacher")
            csv_path = write_sentiment_csv(d / "reviews.csv")
            args = [
                "--teacher",
                str(teacher),
                "--data",
                str(csv_path),
                "--out",
                str(d / "run"),
                *TINY_RUN,
                "--set",
                "quantize.targets=[pruned]",
                "--set",
                "export.tflite_targets=[pruned]",
                "--cache-dir",
                str(d / "cache"),
            ]
            proc = run_cli(*args)
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[model_type] = (d / "run", csv_path, teacher)
        return done[model_type]

    return get


# the data and settings of each task's tiny run (tests/test_tasks_e2e.py); sequence classification's are
# the architectures' and smoke runs'
TASK_RUNS: dict[str, tuple[Any, list[str]]] = {
    # the pair fixture's label sits in the second text: the teacher needs more steps than one-text sentiment
    "pair_classification": (
        write_pair_csv,
        ["--set", "teacher.max_steps=150", "--set", "distill.max_steps=60", "--task", "pair_classification"],
    ),
    # pruning stated: the task's defaults keep the teacher's depth and prune nothing (tasks/embedding.py),
    # and this run covers the pruning path for embeddings
    "embedding": (write_texts_csv, ["--set", "prune.heads=0.5", "--set", "prune.ffn=0.6", "--set", "prune.vocab=true"]),
    "token_classification": (write_ner_jsonl, ["--set", "teacher.max_steps=120", "--set", "distill.max_steps=60"]),
    "multi_label": (write_multi_label_csv, ["--set", "teacher.max_steps=300", "--set", "distill.max_steps=120"]),
}


@pytest.fixture(scope="session")
def task_runs(tmp_path_factory):
    """task -> (run dir, data file): one tiny `compress-and-export` per task on a tiny BERT (segment ids
    in play), pruned int8 ONNX + TFLite, ORT, bundles; built on first use and shared."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(task: str) -> tuple[Path, Path]:
        if task not in done:
            d = tmp_path_factory.mktemp(f"task-run-{task}")
            teacher = make_tiny_bert(d / "teacher")
            write, extra = TASK_RUNS[task]
            data = write(d / ("data.jsonl" if write is write_ner_jsonl else "data.csv"))
            args = ["--teacher", str(teacher), "--data", str(data), "--out", str(d / "run"), *TINY_RUN, *extra]
            args += ["--set", "quantize.targets=[pruned]", "--set", "export.tflite_targets=[pruned]"]
            proc = run_cli(*args, "--cache-dir", str(d / "cache"))
            assert proc.returncode == 0, proc.stderr[-3000:]
            done[task] = (d / "run", data)
        return done[task]

    return get


def bench_int8_remotely(run: Path, runner: str, sshd, phone) -> tuple[dict, dict]:
    """`edgepipe bench RUN` of the pruned int8 ONNX and TFLite on the emulated ARM board (`runner` "arm",
    over SSH) or phone ("android", adb); returns the manifest and its benchmarks by (remote?, artifact)."""
    if runner == "arm":
        _, endpoint = sshd
        device, reach, prefix = arm_device(endpoint), arm_of(endpoint), "arm:"
    else:
        server, phone_device, home = phone
        device, reach, prefix = f"android:{phone_device.serial}", android_of(server, home), "android:"
    args = ["bench", str(run), "--device", device, "--runs", "3", "--warmup", "1"]
    proc = subprocess.run(
        [str(BIN / "edgepipe"), *args, "--artifacts", "onnx_int8,tflite_int8", *reach],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((run / "manifest.json").read_text())
    return m, {(b["device"].startswith(prefix), b["artifact"]): b for b in m["benchmarks"]}


def pruned_test_split(out: Path, n: int):
    """The first `n` test examples as the pruned model's eval inputs hold them (its own token ids)."""
    from edgepipe.tokenized import TokenizedSplit

    return TokenizedSplit(
        *(
            np.load(out / "data" / "test_pruned" / f"{k}.npy")[:n]
            for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
        )
    )


# -- the emulated devices: an aarch64 board over SSH, a phone over adb (see tests/test_device_runners.py) --

ROOT = Path(__file__).resolve().parents[1]
RIG = Path(os.environ.get("EDGEPIPE_RIG_DIR", Path.home() / ".cache" / "edgepipe" / "rig"))


@pytest.fixture(scope="session")
def board() -> Path:
    """The emulated aarch64 board's root (cached across runs; ~1-2 min to build cold)."""
    dest = RIG / "arm64"
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "rig" / "arm_board.sh"), str(dest)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 3:
        pytest.skip(
            "qemu-aarch64-static is missing and cannot be installed without root: " + proc.stderr.strip()[-300:]
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


@pytest.fixture(scope="session")
def executorch_board() -> Path:
    """The board with torch 2.13.0 and executorch 1.5.1 added (+3.3 GB, ~2 min cold once the wheels are
    cached): `.pte` programs run on it through executorch.runtime, as on a board a user sets up."""
    dest = RIG / "arm64-executorch"
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "rig" / "arm_board.sh"), "--executorch", str(dest)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode == 3:
        pytest.skip("qemu-aarch64-static is missing and cannot be installed without root: " + proc.stderr[-300:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


@pytest.fixture(scope="session")
def board_sensors(tmp_path_factory):
    """The emulated board's simulated sysfs: thermal zones with a passive trip point, an INA219 power rail
    on hwmon, cpufreq; it heats while a runner works there (tests/rig/fake_sensors.py)."""
    from rig.fake_sensors import SensorModel, SimulatedSensors

    with SimulatedSensors(tmp_path_factory.mktemp("board-sys"), SensorModel(battery=False)) as sim:
        yield sim


@pytest.fixture(scope="session")
def phone_sensors(tmp_path_factory):
    """The loopback phone's simulated sysfs and dumpsys: a battery on USB power (as a phone on adb is)."""
    from rig.fake_sensors import SensorModel, SimulatedSensors

    with SimulatedSensors(tmp_path_factory.mktemp("phone-sys"), SensorModel(charging=True)) as sim:
        yield sim


@pytest.fixture(scope="session")
def sshd(board, board_sensors, tmp_path_factory):
    from rig.sshd import LoopbackSshd

    server = LoopbackSshd(
        tmp_path_factory.mktemp("sshd"),
        path_prepend=[board / "bin"],
        env={"EDGEPIPE_SENSORS_ROOT": str(board_sensors.root)},
    )
    endpoint = server.start()
    yield server, endpoint
    server.stop()


@pytest.fixture(scope="session")
def phone(board, phone_sensors, tmp_path_factory):
    from rig.adbd import LoopbackAdbDevice, adb_server

    home = tmp_path_factory.mktemp("phone")
    tools = phone_sensors.write_dumpsys(tmp_path_factory.mktemp("phone-bin")).parent
    env = {
        "PATH": f"{tools}:{board / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "EDGEPIPE_SENSORS_ROOT": str(phone_sensors.root),
    }
    with adb_server() as server, LoopbackAdbDevice(env=env, cwd=str(home)) as device:
        server.connect(device.serial)
        yield server, device, home


def arm_of(endpoint) -> list[str]:
    return [
        "--set",
        f"bench.ssh.identity_file={endpoint.key_path}",
        "--set",
        f"bench.ssh.known_hosts={endpoint.known_hosts}",
    ]


def arm_device(endpoint) -> str:
    return f"arm:{endpoint.user}@{endpoint.host}:{endpoint.port}"


def android_of(server, home: Path) -> list[str]:
    return [
        "--set",
        f"bench.android.adb_port={server.port}",
        "--set",
        f"bench.android.remote_dir={home}/data/local/tmp/edgepipe",
    ]
