"""Every registered architecture (edgepipe/arch) against the same contract, on a tiny model of it.

As Optimum's `test_all_models_tested`: registering an architecture without a tiny model here
fails `test_every_architecture_has_a_tiny_model`; with one, it runs every contract below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import make_tiny

from conftest import make_tiny_bert, write_sentiment_csv
from edgepipe.arch import ARCHITECTURES
from edgepipe.config import DataConfig, StudentConfig
from edgepipe.export.onnx import export_onnx
from edgepipe.export.parity import check_parity
from edgepipe.model.load import Tokenizer, load_teacher_dir
from edgepipe.model.surgery import apply_plan, count_macs, shape_of
from edgepipe.model.task_model import load_model, save_model
from edgepipe.model.train import predict
from edgepipe.pipeline.data import load_dataset
from edgepipe.pipeline.distill import build_student
from edgepipe.pipeline.prune import Gates

# model_type -> a function writing a tiny Hugging Face model directory of it (4 heads of 16, FFN 128, 2 layers)
TINY_MODELS: dict[str, Callable[[Path], Path]] = {
    "bert": lambda d: make_tiny_bert(d, layers=2, hidden=64, heads=4, seed=1),
    "distilbert": lambda d: make_tiny("distilbert", d, seed=1),
    "electra": lambda d: make_tiny("electra", d, seed=1),
    "roberta": lambda d: make_tiny("roberta", d, seed=1),
    "xlm-roberta": lambda d: make_tiny("xlm-roberta", d, seed=1),
    "deberta-v2": lambda d: make_tiny("deberta-v2", d, seed=1),
    "modernbert": lambda d: make_tiny("modernbert", d, seed=1),
}


def test_every_architecture_has_a_tiny_model():
    assert set(ARCHITECTURES) == set(TINY_MODELS), "add a tiny model of each registered architecture to TINY_MODELS"


# measured (onnxscript 0.7.2): the int8 stage's attention fusion (pipeline/fusion.py) turns these
# architectures' attention into ONNX Runtime's MultiHeadAttention; DeBERTa-v2's disentangled attention and
# ModernBERT's rotary attention match none of its patterns, and their int8 models are quantized unfused
ATTENTION_FUSES = {
    "bert": True,
    "distilbert": True,
    "electra": True,
    "roberta": True,
    "xlm-roberta": True,
    "deberta-v2": False,
    "modernbert": False,
}


def test_every_architecture_states_whether_its_attention_fuses():
    assert set(ATTENTION_FUSES) == set(ARCHITECTURES), "measure the attention fusion of each architecture"


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def tiny(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"arch-{request.param}")
    directory = TINY_MODELS[request.param](d / "model")
    model = load_teacher_dir(directory)[0].with_labels(["neg", "pos"], seed=0).eval()
    tokenizer = Tokenizer.load(directory)
    dataset, _ = load_dataset(DataConfig(path=write_sentiment_csv(d / "r.csv", n=240), val_size=40, test_size=40))
    return request.param, model, tokenizer, dataset, dataset.tokenize(tokenizer.hf, 24), d


def test_the_model_is_its_architecture_and_reads_only_real_tokens(tiny):
    model_type, model, _, _, data, _ = tiny
    assert model.arch.model_type == model_type and model.config.model_type == model_type
    t = data.test
    ids = t.input_ids[:8].copy()
    ids[t.attention_mask[:8] == 0] = 7  # other tokens in padded positions
    a = predict(model, t.head(8))
    b = predict(model, type(t)(ids, t.attention_mask[:8], t.token_type_ids[:8], t.labels[:8]))
    assert np.abs(a - b).max() < 1e-5


def test_the_encoder_computes_what_transformers_computes(tiny):
    """edgepipe's forward (its additive masks, its positions) against the transformers model's own, on
    texts longer than ModernBERT's tiny local window: equal on every real token."""
    from transformers import AutoModel

    _, model, tokenizer, dataset, _, d = tiny
    reference = AutoModel.from_pretrained(str(d / "model")).eval()
    texts = dataset.texts["test"]
    long = [" ".join(texts[i : i + 3]) for i in range(0, 24, 3)]  # 8 texts of three sentences
    enc = tokenizer.hf(long[:6] + texts[:2], padding="max_length", truncation=True, max_length=48, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    types = enc.get("token_type_ids") if "token_type_ids" in model.input_names else None
    with torch.no_grad():
        ours = model.arch.encode(model.encoder, ids, mask, types, False).last_hidden
        kwargs = {"token_type_ids": types} if types is not None else {}
        theirs = reference(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    real = mask.bool()
    assert int(real.sum(1).max()) > 17  # longer than ModernBERT's window (8 tokens each side)
    assert (ours[real] - theirs[real]).abs().max() < 1e-5


def test_a_classification_checkpoint_keeps_its_head_and_its_logits(tiny, tmp_path):
    """The architecture's `...ForSequenceClassification` (its own head: pooler, dense + activation,
    prediction head) saved as transformers saves it: loaded with that head, the logits transformers gives."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    _, _, tokenizer, dataset, _, d = tiny
    config = AutoConfig.from_pretrained(str(d / "model"), num_labels=2, id2label={0: "neg", 1: "pos"})
    torch.manual_seed(0)
    reference = AutoModelForSequenceClassification.from_config(config).eval()
    reference.save_pretrained(str(tmp_path / "cls"))
    model, with_head = load_teacher_dir(tmp_path / "cls")
    assert with_head and model.labels == ["neg", "pos"] and model.pooling == "cls"
    enc = tokenizer.hf(
        dataset.texts["test"][:8], padding="max_length", max_length=24, truncation=True, return_tensors="pt"
    )
    inputs = {k: enc[k] for k in model.input_names if k in enc}
    with torch.no_grad():
        ours = model.eval()(*(inputs.get(k) for k in ("input_ids", "attention_mask", "token_type_ids")))
        theirs = reference(**inputs).logits
    assert (ours - theirs).abs().max() < 1e-5


def test_removed_heads_and_neurons_equal_masked_ones_and_round_trip(tiny, tmp_path):
    _, model, _, _, data, _ = tiny
    d = model.dims
    plan = {"layers": [0, 1], "heads": [[0, 2], []], "ffn": [list(range(0, d.intermediate, 3)), []]}
    pruned = apply_plan(model, plan)
    heads = [torch.tensor([1.0 if h in kept else 0.0 for h in range(d.heads)]) for kept in plan["heads"]]
    ffn = [torch.tensor([1.0 if n in kept else 0.0 for n in range(d.intermediate)]) for kept in plan["ffn"]]
    with Gates(model, heads, ffn):
        masked = predict(model, data.test)
    assert np.abs(predict(pruned, data.test) - masked).max() < 1e-5
    assert shape_of(pruned.arch, pruned.encoder) == {"heads": [2, 0], "ffn": [len(plan["ffn"][0]), 0]}
    full, small = count_macs(model.arch, model.encoder, 32), count_macs(pruned.arch, pruned.encoder, 32)
    assert small["attention"] * 4 == full["attention"]  # 2 of 2x4 heads left
    assert pruned.num_params() < model.num_params()
    save_model(pruned, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.arch is model.arch and np.array_equal(predict(back, data.test), predict(pruned, data.test))


def test_a_pruned_vocabulary_gives_the_same_outputs_through_its_own_tokenizer(tiny, tmp_path):
    _, model, tokenizer, dataset, data, _ = tiny
    vocab = model.arch.prune_vocabulary(tokenizer.hf, dataset.texts["train"], tokenizer.directory, tmp_path / "tok")
    assert len(vocab.kept_ids) < vocab.original_size // 3
    small = apply_plan(
        model, {"layers": [0, 1], "heads": [[0, 1, 2, 3]] * 2, "ffn": [list(range(model.dims.intermediate))] * 2}
    )
    small.arch.keep_tokens(small.encoder, vocab.kept_ids)
    new = dataset.tokenize(vocab.tokenizer, 24)
    # the texts the vocabulary was cut from: the same tokens under new ids, the same outputs
    assert np.array_equal(np.asarray(vocab.kept_ids)[new.train.input_ids], data.train.input_ids)
    assert np.abs(predict(small, new.train) - predict(model, data.train)).max() < 1e-5
    card = model.arch.tokenizer_card(vocab.tokenizer, tmp_path / "tok")
    assert card["vocab_size"] == len(vocab.kept_ids)
    assert (tmp_path / "tok" / card.get("vocab", card.get("tokenizer_json", "?"))).is_file()


def test_students_of_the_same_and_a_narrower_width(tiny):
    _, model, _, _, data, _ = tiny
    same = build_student(model, StudentConfig(layers=[1]), seed=0)
    for (k, v), (_, w) in zip(
        same.arch.layers(same.encoder)[0].state_dict().items(), model.arch.layers(model.encoder)[1].state_dict().items()
    ):
        assert torch.equal(v, w), k
    narrow = build_student(model, StudentConfig(layers=[0], hidden_size=32, num_heads=2), seed=0)
    assert narrow.dims.hidden == 32 and narrow.arch.word_embeddings(narrow.encoder).weight.shape[1] == 32
    assert predict(narrow, data.test.head(4)).shape == (4, 2)


def test_attention_fuses_exactly_where_the_rewriter_knows_it_and_nowhere_else(tiny, tmp_path):
    from edgepipe.pipeline.fusion import fused_attention

    name, model, _, _, data, _ = tiny
    export_onnx(model, tmp_path / "m.onnx", data.test)
    graph, info = fused_attention(tmp_path / "m.onnx", tmp_path / "f.onnx", data.val)
    assert info["used"] == ATTENTION_FUSES[name] == (graph != tmp_path / "m.onnx"), info
    if info["used"]:
        assert info["attention_ops"] == model.dims.layers and info["max_abs_vs_unfused"] < 1e-5
    else:
        assert "no attention matched" in info["why"]


def test_the_onnx_export_of_a_pruned_model_matches_pytorch(tiny, tmp_path):
    _, model, _, _, data, _ = tiny
    pruned = apply_plan(model, {"layers": [1], "heads": [[1, 3]], "ffn": [list(range(0, model.dims.intermediate, 2))]})
    export_onnx(pruned, tmp_path / "m.onnx", data.test)
    assert check_parity(pruned, tmp_path / "m.onnx", data.test, atol=1e-4)["parity_max_abs"] < 1e-4
    # the int8 stage's word-embedding table (int8 rows, one scale each) finds this architecture's lookup
    import onnx

    from edgepipe.pipeline.quantize import quantize_embeddings
    from edgepipe.runtimes.onnxruntime import OrtModel

    graph = onnx.load(str(tmp_path / "m.onnx"))
    assert quantize_embeddings(graph) == 1  # the word table (>= 64k elements); positions and types stay fp32
    onnx.save(graph, str(tmp_path / "m.rows.onnx"))
    fp32, rows = predict(pruned, data.test), OrtModel(tmp_path / "m.rows.onnx", threads=1).predict(data.test)
    assert np.abs(rows - fp32).max() < 0.05 * np.abs(fp32).max()  # the untrained head's logits are near ties


def test_a_width_cut_keeps_every_kept_number_and_round_trips_or_is_refused(tiny, tmp_path):
    """prune.hidden: the residual stream narrows in every table, projection and LayerNorm (an architecture
    that cannot says so in one line); all dimensions kept is the same function, a real cut is smaller,
    rebuilds from its saved config with layers keeping more heads than that config counts, and exports."""
    from edgepipe.config import PruneConfig
    from edgepipe.errors import ConfigError
    from edgepipe.pipeline.prune import select

    _, model, _, _, data, _ = tiny
    d = model.dims
    writers = model.arch.residual_writers(model.encoder)
    if not writers:
        with pytest.raises(ConfigError, match="cannot cut its hidden width"):
            select([np.ones(d.heads)] * 2, [np.ones(d.intermediate)] * 2, PruneConfig(hidden=0.5), d.hidden, 16)
        return
    assert len(writers) == 1 + 2 * d.layers
    full = {"layers": [0, 1], "heads": [list(range(d.heads))] * 2, "ffn": [list(range(d.intermediate))] * 2}
    same = apply_plan(model, full | {"hidden": list(range(d.hidden)), "norm_gain": [1.0] * len(writers)})
    assert np.abs(predict(same, data.test) - predict(model, data.test)).max() < 1e-5
    # 3 of 4 heads in layer 0, 1 of 4 in layer 1; 32 of 64 dimensions: the saved config counts 2 heads of 16
    kept = sorted(np.random.default_rng(0).permutation(d.hidden)[:32].tolist())
    plan = {"layers": [0, 1], "heads": [[0, 1, 3], [2]], "ffn": [list(range(0, d.intermediate, 2))] * 2}
    cut = apply_plan(model, plan | {"hidden": kept, "norm_gain": [1.1] * len(writers)})
    assert cut.dims.hidden == 32 and cut.dims.head_dim == d.head_dim
    assert model.arch.word_embeddings(cut.encoder).weight.shape[1] in (32, model.config.to_dict().get("embedding_size"))
    assert shape_of(cut.arch, cut.encoder) == {"heads": [3, 1], "ffn": [d.intermediate // 2] * 2}
    small = count_macs(cut.arch, cut.encoder, 32)
    assert small["ffn"] * 4 == count_macs(model.arch, model.encoder, 32)["ffn"]  # half the neurons, half the width
    assert float(model.arch.residual_writers(cut.encoder)[-1].weight[0].detach()) == pytest.approx(
        1.1 * float(writers[-1].weight[kept[0]].detach())
    )
    save_model(cut, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert np.array_equal(predict(back, data.test), predict(cut, data.test))
    export_onnx(cut, tmp_path / "m.onnx", data.test)
    assert check_parity(cut, tmp_path / "m.onnx", data.test, atol=1e-4)["parity_max_abs"] < 1e-4
