"""Where a teacher comes from: a local directory, or a Hugging Face hub id resolved through the hub
cache (offline: no download is attempted unless the user turns the hub on) - and the teachers
refused before anything is trained, one line each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from tiny_models import make_tiny

from edgepipe.errors import ModelError
from edgepipe.model.load import Tokenizer, load_teacher_dir, teacher_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo_id: str, files: Path) -> Path:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    shutil.copytree(files, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return repo / "snapshots" / COMMIT


@pytest.fixture(scope="module")
def tiny_distilbert(tmp_path_factory) -> Path:
    return make_tiny("distilbert", tmp_path_factory.mktemp("hub") / "files")


def test_a_cached_hub_id_resolves_offline_to_its_snapshot(tiny_distilbert, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = hub_cache(tmp_path / "hub", "someone/tiny-distilbert-sst2", tiny_distilbert)
    source = teacher_source(Path("someone/tiny-distilbert-sst2"))
    assert source.resolve() == snapshot.resolve() and source.name == COMMIT
    model, has_head = load_teacher_dir(source)
    assert model.arch.model_type == "distilbert" and not has_head
    assert len(Tokenizer.load(source).hf) == 30522


def test_an_uncached_hub_id_is_one_line_naming_it_and_how_to_fetch_it(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        teacher_source(Path("distilbert-base-uncased-finetuned-sst-2-english"))
    msg = str(e.value)
    assert "distilbert-base-uncased-finetuned-sst-2-english is not a local directory" in msg
    assert "hf download distilbert-base-uncased-finetuned-sst-2-english" in msg and "\n" not in msg


def test_a_local_path_that_does_not_exist_is_not_taken_for_a_hub_id(tmp_path):
    assert teacher_source(tmp_path / "nope") == tmp_path / "nope"  # then refused by the directory checks
    assert teacher_source(Path("models/a/mine")) == Path("models/a/mine")  # three parts: never a hub id


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tiny_distilbert, tmp_path):
    d = tmp_path / "t"
    shutil.copytree(tiny_distilbert, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"vocab_size": 1000}))
    with pytest.raises(ModelError, match="has 30522 tokens but the model's embedding table has 1000 rows"):
        Tokenizer.load(d)


def test_weights_of_another_shape_than_the_config_are_refused(tiny_distilbert, tmp_path):
    d = tmp_path / "t"
    shutil.copytree(tiny_distilbert, d)
    state = load_file(str(d / "model.safetensors"))
    name = "transformer.layer.0.ffn.lin1.weight"
    state[name] = state[name][:100]
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ModelError, match="do not match its config.json .*size mismatch"):
        load_teacher_dir(d)
