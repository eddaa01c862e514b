"""`compress-and-export --teacher DIR` end to end for every architecture besides BERT, on tiny real
models (tests/tiny_models.py): each stage's numbers checked, and the app bundle's own tokenizer
and runtime (torch and transformers blocked) give the pipeline's labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import OTHER_ARCHITECTURES, app_check_answers, bench_int8_remotely, pruned_test_split
from edgepipe.arch import ARCHITECTURES
from edgepipe.export.bundle import preprocessor_gap

pytestmark = pytest.mark.e2e


# the remote runner each architecture's run is benchmarked on. The transports (SSH, adb) and the runner are
# the same code for every architecture; what differs is the graph the aarch64 kernels run (two or three
# inputs, relative-position gathers, rotary and sliding-window arithmetic). Alternating covers both
# transports; BERT runs on both (tests/test_device_runners.py).
REMOTE_RUNNER = {
    "distilbert": "android",
    "electra": "arm",
    "roberta": "arm",
    "xlm-roberta": "android",
    "deberta-v2": "arm",
    "modernbert": "android",
}


def test_every_architecture_runs_end_to_end():
    assert set(OTHER_ARCHITECTURES) | {"bert"} == set(ARCHITECTURES), "add the architecture to OTHER_ARCHITECTURES"
    assert set(REMOTE_RUNNER) == set(OTHER_ARCHITECTURES), "name the remote runner of each architecture"


@pytest.mark.parametrize("model_type", OTHER_ARCHITECTURES)
def test_the_whole_run_on_a_tiny_model_of_each_architecture(arch_runs, model_type, tmp_path):
    out, _, teacher = arch_runs(model_type)
    m = json.loads((out / "manifest.json").read_text())
    models = m["models"]
    assert {models[r]["model_type"] for r in ("teacher", "student", "pruned")} == {model_type}
    # physically smaller, and the exports match PyTorch
    assert models["pruned"]["params"] < models["student"]["params"] < models["teacher"]["params"]
    assert models["pruned"]["vocab_size"] < models["teacher"]["vocab_size"]
    for role in ("teacher", "student", "pruned"):
        assert models[role]["artifacts"]["onnx_fp32"]["parity_max_abs"] < 1e-4
    arts = models["pruned"]["artifacts"]
    assert arts["tflite_fp32"]["parity_max_abs"] < 1e-4
    # int8 within the accuracy budget of the fp32 model, on the test split
    for name in ("onnx_int8", "tflite_int8", "ort"):
        assert arts[name]["test_accuracy"] >= models["pruned"]["accuracy"] - 0.05, name
    assert arts["onnx_int8"]["budget_met"]
    # the word-embedding table goes int8 per row once it is large (>= 64k elements; tiny vocabularies stay fp32)
    large = models["pruned"]["vocab_size"] * models["pruned"]["hidden_size"] >= 65536
    assert (arts["onnx_int8"]["int8_embeddings"] >= 1) == large
    assert models["pruned"]["accuracy"] > m["baseline"]["metric"] + 0.2  # it learned the task
    inputs = ARCHITECTURES[model_type].input_names
    for target in ("tflite", "ort"):
        bundle = tmp_path / target
        shutil.copytree(out / m["bundles"][target]["path"], bundle)
        card = json.loads((bundle / "model_card.json").read_text())
        assert [i["role"] for i in card["inputs"]] == list(inputs)
        assert card["tokenizer"]["vocab_size"] == models["pruned"]["vocab_size"]
        if target == "tflite":  # MediaPipe metadata where its BERT preprocessor fits, else the card says why
            gap = preprocessor_gap(card["tokenizer"], inputs)
            readme = (bundle / "README.md").read_text()
            if gap is None:
                assert card["model"]["task_library_metadata"] == "BertNLClassifier", model_type
            else:
                assert gap in card["model"]["task_library_metadata_missing"] and gap in readme, model_type
        assert_app_gives_the_pipelines_labels(out, m, bundle, card, tmp_path / f"{target}-texts.txt")


def assert_app_gives_the_pipelines_labels(out: Path, m: dict, bundle: Path, card: dict, texts_file: Path) -> None:
    """app_check.py, with torch/transformers/tokenizers/edgepipe made unimportable, on the test texts:
    the same ids as the pipeline's pruned tokenizer, so the same labels as the runtime on those ids."""
    from edgepipe.config import build_config, load_yaml
    from edgepipe.pipeline.data import load_dataset
    from edgepipe.runtimes import open_model

    cfg = build_config(load_yaml(out / "config.yaml"))
    texts = load_dataset(cfg.data)[0].texts["test"][:60]
    answers = app_check_answers(bundle, texts, texts_file)
    app = [a["index"] for a in answers]
    ref = open_model(bundle / card["model"]["file"]).predict(pruned_test_split(out, 60)).argmax(1)
    assert app == ref.tolist()


@pytest.mark.parametrize("model_type", OTHER_ARCHITECTURES)
def test_each_architecture_measures_the_same_accuracy_on_a_remote_runner(arch_runs, model_type, sshd, phone, tmp_path):
    """Each architecture's int8 ONNX and TFLite through `edgepipe bench` on the emulated aarch64 board
    (SSH) or phone (adb): the same accuracy as x86 on the same test ids."""
    out = tmp_path / "run"
    shutil.copytree(arch_runs(model_type)[0], out, ignore=shutil.ignore_patterns("run.lock"))
    _, by = bench_int8_remotely(out, REMOTE_RUNNER[model_type], sshd, phone)
    for name in ("onnx_int8", "tflite_int8"):
        remote, x86 = by[(True, name)], by[(False, name)]
        assert x86["device"] == "x86" and remote["accuracy"] == x86["accuracy"], name
        assert remote["device_info"]["emulated"] == "qemu-user"
