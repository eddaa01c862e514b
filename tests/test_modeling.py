import json

import numpy as np
import pytest
import torch

from conftest import make_tiny_bert
from edgepipe.config import StudentConfig
from edgepipe.errors import ConfigError, ModelError
from edgepipe.model.load import load_teacher_dir
from edgepipe.model.task_model import load_model, save_model
from edgepipe.pipeline.distill import build_student


def _inputs(n=3, length=7):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    mask[0, 4:] = 0
    return ids, mask, torch.zeros_like(ids)


def test_save_load_round_trip_is_exact_and_uses_safetensors(tmp_path, tiny_teacher):
    model, has_head = load_teacher_dir(tiny_teacher)
    assert not has_head and model.pooling == "mean"
    model.eval()
    files = save_model(model, tmp_path / "m", tokenizer_dir=tiny_teacher)
    assert {f.name for f in files} >= {"model.safetensors", "edgepipe.json", "vocab.txt"}
    back = load_model(tmp_path / "m").eval()
    args = _inputs()
    assert torch.equal(model(*args), back(*args))


def test_hf_sequence_classification_checkpoint_keeps_its_head(tmp_path):
    d = make_tiny_bert(tmp_path / "clf", head_labels=["negative", "positive"])
    model, has_head = load_teacher_dir(d)
    assert has_head and model.labels == ["negative", "positive"] and model.pooling == "cls"
    from transformers import BertForSequenceClassification

    ref = BertForSequenceClassification.from_pretrained(str(d), local_files_only=True).eval()
    ids, mask, types = _inputs()
    with torch.no_grad():
        assert torch.allclose(
            model.eval()(ids, mask, types),
            ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits,
            atol=1e-5,
        )


def test_mean_pooling_ignores_padding(tiny_teacher):
    model, _ = load_teacher_dir(tiny_teacher)
    model.eval()
    ids, mask, types = _inputs(1, 8)
    mask[0, 5:] = 0
    a = model(ids, mask, types)
    ids2 = ids.clone()
    ids2[0, 5:] = 4242
    assert torch.allclose(a, model(ids2, mask, types), atol=1e-6)


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "is empty"),
        (lambda d: (d.mkdir(), (d / "x.txt").write_text("x")), "has no config.json"),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text(json.dumps({"model_type": "gpt2"}))),
            "is a decoder-only language model (model_type 'gpt2')",
        ),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text(json.dumps({"model_type": "mpnet"}))),
            "is a 'mpnet' model; edgepipe needs an encoder "
            "(model_type bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta)",
        ),
        (lambda d: (d.mkdir(), (d / "config.json").write_text("{not json")), "not JSON"),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text(json.dumps({"model_type": "bert"}))),
            "has no model.safetensors",
        ),
    ],
)
def test_bad_teacher_dirs(tmp_path, setup, needle):
    d = tmp_path / "teacher"
    setup(d)
    with pytest.raises(ModelError) as e:
        load_teacher_dir(d)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_corrupt_safetensors_is_a_model_error(tmp_path, tiny_teacher):
    import shutil

    d = tmp_path / "t"
    shutil.copytree(tiny_teacher, d)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="corrupt or truncated"):
        load_teacher_dir(d)


def test_pickle_checkpoints_are_loaded_weights_only(tmp_path, tiny_teacher):
    """A pytorch_model.bin with a pickled object (not just tensors) is refused, never executed."""
    import pickle
    import shutil

    d = tmp_path / "t"
    shutil.copytree(tiny_teacher, d)
    (d / "model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_teacher_dir(d)


def test_student_copies_the_chosen_teacher_layers(tiny_teacher):
    teacher, _ = load_teacher_dir(tiny_teacher)
    student = build_student(teacher, StudentConfig(layers=[1]), seed=0)
    assert student.config.num_hidden_layers == 1
    for (k, v), (_, w) in zip(
        student.encoder.encoder.layer[0].state_dict().items(), teacher.encoder.encoder.layer[1].state_dict().items()
    ):
        assert torch.equal(v, w), k
    assert student.num_params() < teacher.num_params()


def test_narrow_student_gets_projected_embeddings(tiny_teacher):
    teacher, _ = load_teacher_dir(tiny_teacher)
    student = build_student(teacher, StudentConfig(layers=[0], hidden_size=32, num_heads=2), seed=0)
    assert student.config.hidden_size == 32 and student.encoder.embeddings.word_embeddings.weight.shape == (30522, 32)
    with pytest.raises(ConfigError, match="out of range"):
        build_student(teacher, StudentConfig(layers=[5]), seed=0)
    with pytest.raises(ConfigError, match="not divisible"):
        build_student(teacher, StudentConfig(layers=[0], hidden_size=30, num_heads=4), seed=0)


def test_a_student_that_is_the_whole_teacher_is_not_distilled(tiny_teacher):
    """Every layer at full width: distillation could only move it away from the teacher (one
    AdamW step took a six-layer copy of all-MiniLM-L6-v2 from cosine 1.0 to 0.984), so it is skipped."""
    from edgepipe.pipeline.distill import is_whole_copy, train_student
    from edgepipe.tokenized import TokenizedSplit

    teacher, _ = load_teacher_dir(tiny_teacher)
    teacher = teacher.with_labels(["neg", "pos"], seed=0).eval()
    every = list(range(teacher.dims.layers))
    assert is_whole_copy(teacher, StudentConfig(layers=every))
    assert is_whole_copy(teacher, StudentConfig(layers=every, hidden_size=teacher.dims.hidden))
    assert not is_whole_copy(teacher, StudentConfig(layers=every[:-1]))
    assert not is_whole_copy(teacher, StudentConfig(layers=every[::-1]))
    assert not is_whole_copy(teacher, StudentConfig(layers=every, hidden_size=32, num_heads=2))
    ids = torch.randint(1000, 2000, (8, 7))
    split = TokenizedSplit(ids.numpy(), np.ones((8, 7), np.int64), np.zeros((8, 7), np.int64), np.zeros(8, np.int64))
    from edgepipe.config import DistillConfig

    student, report = train_student(
        teacher, split, split, torch.zeros(8, 2), StudentConfig(layers=every), DistillConfig(batch_size=4), seed=0
    )
    assert report["train"] == {"steps": 0, "skipped": "the student is the teacher's copy (every layer, same width)"}
    x = _inputs()
    with torch.no_grad():
        assert torch.equal(student(*x), teacher(*x))
