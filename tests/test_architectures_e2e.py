"""`compress-and-export --teacher DIR` end to end for every architecture besides BERT, on tiny real
models (tests/tiny_models.py): each stage's numbers checked, and the app bundle's own tokenizer
and runtime (torch and transformers blocked) give the pipeline's labels."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import OTHER_ARCHITECTURES
from edgepipe.arch import ARCHITECTURES

pytestmark = pytest.mark.e2e


def test_every_architecture_runs_end_to_end():
    assert set(OTHER_ARCHITECTURES) | {"bert"} == set(ARCHITECTURES), "add the architecture to OTHER_ARCHITECTURES"


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
        assert_app_gives_the_pipelines_labels(out, m, bundle, card, tmp_path / f"{target}-texts.txt")


def assert_app_gives_the_pipelines_labels(out: Path, m: dict, bundle: Path, card: dict, texts_file: Path) -> None:
    """app_check.py, with torch/transformers/tokenizers/edgepipe made unimportable, on the test texts:
    the same ids as the pipeline's pruned tokenizer, so the same labels as the runtime on those ids."""
    from edgepipe.config import build_config, load_yaml
    from edgepipe.pipeline.data import load_dataset
    from edgepipe.runtimes import open_model
    from edgepipe.tokenized import TokenizedSplit

    cfg = build_config(load_yaml(out / "config.yaml"))
    texts = load_dataset(cfg.data)[0].texts["test"][:60]
    texts_file.write_text("\n".join(texts) + "\n")
    block = (
        "import sys; [sys.modules.__setitem__(k, None) for k in ('torch', 'transformers', 'tokenizers', 'edgepipe')]; "
    )
    code = block + (
        f"import runpy; sys.argv = ['app_check', {str(bundle)!r}, '--texts', {str(texts_file)!r}]; "
        f"runpy.run_path({str(bundle / 'app_check.py')!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    app = [json.loads(line)["index"] for line in proc.stdout.splitlines()]
    arrays = {
        k: np.load(out / "data" / "test_pruned" / f"{k}.npy")[:60]
        for k in ("input_ids", "attention_mask", "token_type_ids", "labels")
    }
    split = TokenizedSplit(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], arrays["labels"])
    ref = open_model(bundle / card["model"]["file"]).predict(split).argmax(1)
    assert app == ref.tolist()
