"""Structured and vocabulary pruning on a small real BERT (random weights, real vocabulary)."""

import numpy as np
import pytest
import torch

from conftest import make_tiny_bert, write_sentiment_csv
from edgepipe.arch import wordpiece
from edgepipe.config import DataConfig, PruneConfig, build_config
from edgepipe.errors import ConfigError
from edgepipe.export.onnx import export_onnx
from edgepipe.export.parity import check_parity
from edgepipe.model.load import load_teacher_dir, load_tokenizer
from edgepipe.model.surgery import apply_plan, count_macs
from edgepipe.model.task_model import load_model, save_model
from edgepipe.model.train import predict
from edgepipe.pipeline import prune as P
from edgepipe.pipeline.data import load_dataset
from edgepipe.tasks.losses import DistillationLoss


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("prune")
    teacher_dir = make_tiny_bert(d / "bert", layers=2, hidden=64, heads=4, seed=1)
    model = load_teacher_dir(teacher_dir)[0].with_labels(["neg", "pos"], seed=0).eval()
    csv = write_sentiment_csv(d / "r.csv", n=300)
    ds, _ = load_dataset(DataConfig(path=csv, val_size=50, test_size=50))
    tok = load_tokenizer(teacher_dir)
    splits = ds.tokenize(tok, 32)
    return d, teacher_dir, model, ds, tok, splits


PLAN = {
    "layers": [0, 1],
    "heads": [[0, 2], []],
    "ffn": [list(range(0, 128, 3)), []],
    "head_ratio": None,
    "ffn_ratio": None,
}


def test_pruned_model_equals_the_masked_model_and_is_physically_smaller(setup, tmp_path):
    _, teacher_dir, model, _, _, splits = setup
    pruned = apply_plan(model, PLAN)
    test = splits["test"]
    head_masks = [torch.tensor([1.0 if h in kept else 0.0 for h in range(4)]) for kept in PLAN["heads"]]
    ffn_masks = [torch.tensor([1.0 if n in kept else 0.0 for n in range(128)]) for kept in PLAN["ffn"]]
    with P.Gates(model, head_masks, ffn_masks):
        masked = predict(model, test)
    assert np.abs(predict(pruned, test) - masked).max() < 1e-5
    assert pruned.num_params() < model.num_params()
    macs_full, macs_pruned = count_macs(model.arch, model.encoder, 64), count_macs(pruned.arch, pruned.encoder, 64)
    assert macs_pruned["attention"] == macs_full["attention"] // 4  # 2 of 8 heads left
    assert macs_pruned["ffn"] * 128 * 2 == macs_full["ffn"] * len(PLAN["ffn"][0])
    a = save_model(model, tmp_path / "full")[0].stat().st_size
    b = save_model(pruned, tmp_path / "pruned")[0].stat().st_size
    assert b < a
    back = load_model(tmp_path / "pruned").eval()
    assert back.describe(64)["heads_per_layer"] == [2, 0] and back.describe(64)["ffn_per_layer"] == [43, 0]
    assert np.array_equal(predict(back, test), predict(pruned, test))


def test_pruned_model_exports_to_onnx_with_parity(setup, tmp_path):
    _, _, model, _, _, splits = setup
    pruned = apply_plan(model, PLAN)
    path = tmp_path / "pruned.onnx"
    export_onnx(pruned, path, splits["test"])
    assert check_parity(pruned, path, splits["test"], atol=1e-4)["parity_max_abs"] < 1e-4


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_importance_ranks_a_useless_head_last(setup, method):
    _, _, model, _, _, splits = setup
    import copy

    m = copy.deepcopy(model)
    sa, out = m.encoder.encoder.layer[1].attention.self, m.encoder.encoder.layer[1].attention.output
    with torch.no_grad():  # head 3 of layer 1 contributes nothing
        for lin in (sa.query, sa.key, sa.value):
            lin.weight[48:64] = 0
            lin.bias[48:64] = 0
        out.dense.weight[:, 48:64] = 0
    if method == "taylor":
        logits = torch.from_numpy(predict(m, splits["train"])) * 3 + torch.randn(len(splits["train"]), 2)
        heads, ffn, _ = P.taylor_importance(
            m, splits["train"], logits, DistillationLoss(2.0, 0.5), n_batches=6, batch_size=16, seed=0
        )
    else:
        heads, ffn = P.magnitude_importance(m)
    assert heads[1].argmin() == 3 and heads[1][3] == pytest.approx(0.0, abs=1e-12)
    plan = P.select(heads, ffn, PruneConfig(heads=1 / 8, ffn=0.0), hidden=64, head_dim=16)
    assert plan["heads"] == [[0, 1, 2, 3], [0, 1, 2]]


def test_target_params_and_bad_configs(setup):
    _, _, model, _, _, _ = setup
    heads, ffn = P.magnitude_importance(model)
    full = P.non_embedding_params(64, 16, [4, 4], [128, 128])
    plan = P.select(heads, ffn, PruneConfig(target_params=full // 2), hidden=64, head_dim=16)
    kept = P.non_embedding_params(64, 16, [len(h) for h in plan["heads"]], [len(f) for f in plan["ffn"]])
    assert full // 2 * 0.9 <= kept <= full // 2
    with pytest.raises(ConfigError, match="would remove every attention head"):
        P.select(heads, ffn, PruneConfig(heads=0.95, ffn=0.5), hidden=64, head_dim=16)
    with pytest.raises(ConfigError, match="would remove every FFN neuron"):
        P.select(heads, ffn, PruneConfig(heads=0.5, ffn=0.999), hidden=64, head_dim=16)
    for override, needle in [
        ({"prune.heads": 1.0}, "prune.heads: Input should be less than 1"),
        ({"prune.ffn": -0.1}, "prune.ffn: Input should be greater than or equal to 0"),
        ({"prune.layers": 3}, "would remove all 3 student layers"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            build_config(override)


def test_vocab_pruning_round_trips_text_to_the_same_logits(setup, tmp_path):
    _, teacher_dir, model, ds, tok, splits = setup
    vocab = wordpiece.read_vocab(teacher_dir)
    keep = wordpiece.corpus_token_ids(tok, ds.texts["train"], vocab)
    assert len(keep) < len(vocab) // 3
    assert all(vocab[i] in [vocab[k] for k in keep] for i in tok.all_special_ids)
    small = apply_plan(model, PLAN)
    small.arch.keep_tokens(small.encoder, keep)
    new_tok = wordpiece.write_tokenizer(tmp_path / "tok", [vocab[i] for i in keep], tok)
    assert small.encoder.embeddings.word_embeddings.weight.shape[0] == len(keep)
    new_splits = ds.tokenize(new_tok, 32)
    old_ids, new_ids = splits["train"].input_ids, new_splits["train"].input_ids
    remap = np.asarray(keep)
    assert np.array_equal(remap[new_ids], old_ids)  # same tokens, new ids
    full = apply_plan(model, PLAN)
    assert np.abs(predict(small, new_splits["train"]) - predict(full, splits["train"])).max() < 1e-5
    # a word never seen in training still splits into known pieces, not [UNK]
    ids = new_tok("zyxwvut qqq")["input_ids"]
    assert new_tok.unk_token_id not in ids


def test_a_prune_that_removes_no_structure_needs_no_importance_and_keeps_the_shape(setup):
    _, _, model, *_ = setup
    assert not P.needs_importance(PruneConfig(heads=0, ffn=0))
    assert P.needs_importance(PruneConfig(heads=0, ffn=0.1)) and P.needs_importance(
        PruneConfig(heads=0, ffn=0, layers=1)
    )
    assert P.needs_importance(PruneConfig(heads=0, ffn=0, target_params=10_000))
    scores = P.uniform_importance(model)
    assert [len(h) for h in scores.heads] == [4, 4] and [len(f) for f in scores.ffn] == [128, 128]
    assert scores.key == P.uniform_importance(model).key and scores.key.startswith("uniform:")
    pruned, report = P.prune_structure(model, scores, PruneConfig(heads=0, ffn=0))
    assert report["shape"] == {"heads": [4, 4], "ffn": [128, 128]} and pruned.num_params() == model.num_params()


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_width_importance_ranks_a_dead_dimension_last_and_the_cut_keeps_whole_heads(setup, method):
    _, _, model, _, _, splits = setup
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():  # dimension 5 is zero wherever the residual stream is written
        for writer in m.arch.residual_writers(m.encoder):
            writer.weight[5] = 0
            writer.bias[5] = 0
    if method == "taylor":
        logits = torch.from_numpy(predict(m, splits["train"])) * 3
        _, _, hidden = P.taylor_importance(
            m, splits["train"], logits, DistillationLoss(2.0, 0.5), n_batches=4, batch_size=16, seed=0
        )
    else:
        hidden = P.magnitude_hidden(m)
    assert hidden.shape == (64,) and hidden.argmin() == 5 and hidden[5] == pytest.approx(0.0, abs=1e-12)
    # 30 % of 64 = 19.2 dimensions; whole heads of 16: 48 stay, and not the dead one
    kept = P.keep_width(hidden, 0.3, 16)
    removed = sorted(set(range(64)) - set(kept))
    assert len(kept) == 48 and 5 in removed and hidden[kept].min() >= hidden[removed].max()
    assert len(P.keep_width(hidden, 0.99, 16)) == 16  # at least one head's width
    heads, ffn = P.magnitude_importance(m)
    scores = P.Importance(heads, ffn, "k", hidden)
    pruned, report = P.prune_structure(m, scores, PruneConfig(heads=0, ffn=0, hidden=0.5), splits["train"], 16)
    assert pruned.dims.hidden == 32 and report["hidden_kept"] == 32 and len(report["norm_gain"]) == 5
    assert pruned.head.in_features == 32 and predict(pruned, splits["test"]).shape == (50, 2)


def test_norm_gain_is_the_kept_dimensions_share_of_the_spread():
    """A LayerNorm input whose removed dimension is zero: std(kept) / std(all), by hand."""
    x = torch.tensor([[3.0, -1.0, 2.0, 0.0], [1.0, 1.0, -2.0, 0.0]])
    ratio = P.spread_ratio(x, torch.tensor([0, 1, 2]))
    assert ratio[0] == pytest.approx(np.sqrt((13 / 3) / (10 / 3)), abs=1e-6)  # sample variances 4.33 and 3.33
    assert ratio[1] == pytest.approx(np.sqrt(3.0 / 2.0), abs=1e-6)


def test_a_width_cut_of_sentence_embeddings_is_refused_in_one_line():
    from edgepipe import tasks

    with pytest.raises(ConfigError, match="prune.hidden=0"):
        tasks.get("embedding").keep_head_inputs(torch.nn.Identity(), torch.arange(4))


def test_the_width_cut_is_a_default_only_where_it_can_be_made(setup):
    """A linear head on an architecture with residual writers: a third of the width, two recovery epochs;
    sentence embeddings (the output is the hidden state) and DeBERTa-v2 (not written) get none."""
    import copy

    from edgepipe import tasks

    _, _, model, *_ = setup
    assert P.width_defaults(model) == {"prune.hidden": 1 / 3, "prune.recovery_epochs": 2.0}
    embedder = copy.deepcopy(model)
    embedder.head = torch.nn.Identity()
    assert P.width_defaults(embedder) == {}
    assert tasks.get("embedding").config_defaults(6)["prune.hidden"] == 0.0
    from edgepipe.arch import ARCHITECTURES

    assert ARCHITECTURES["deberta-v2"].residual_writers(model.encoder) == []
