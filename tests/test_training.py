"""The training schedule (edgepipe.model.train): steps with a floor and a cap, validation at planned
steps, the best checkpoint kept, early stopping; and the baseline check and the transfer set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn

from edgepipe.config import DATA_SIZE_DEFAULTS, SMALL_DATA, RunConfig, build_config, for_data_size
from edgepipe.errors import DataError
from edgepipe.model.train import TrainSettings, fit
from edgepipe.pipeline import augment, baseline
from edgepipe.pipeline.data import Dataset
from edgepipe.tasks import get
from edgepipe.tokenized import UNLABELED, TokenizedSplit


@pytest.mark.parametrize(
    "n,settings,planned",
    [
        (500, dict(batch_size=16, epochs=1.0), 32),  # no floor: one epoch
        (500, dict(batch_size=16, epochs=1.0, min_steps=300), 300),  # the floor lifts small data
        (9752, dict(batch_size=32, epochs=1.0, min_steps=300), 305),  # large data: epochs decide
        (500, dict(batch_size=16, epochs=1.0, min_steps=300, max_steps=30), 30),  # the cap wins (smoke runs)
        (500, dict(batch_size=16, epochs=20.0, min_steps=300, max_steps=400), 400),
    ],
)
def test_planned_steps_floor_and_cap(n, settings, planned):
    assert TrainSettings(lr=1e-3, **settings).total_steps(n) == planned


def test_evaluation_steps_are_spread_and_end_at_the_last_step():
    s = TrainSettings(lr=1e-3, batch_size=8, epochs=1.0, evaluations=6)
    assert s.evaluation_steps(300) == [50, 100, 150, 200, 250, 300]
    assert s.evaluation_steps(4) == [1, 2, 3, 4]  # never more checks than steps
    assert TrainSettings(lr=1e-3, batch_size=8, epochs=1.0).evaluation_steps(300) == []


class Scalar(nn.Module):
    """One weight; the loss pulls it up by a fixed amount each step, so its value counts the steps."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def _split(n: int = 64) -> TokenizedSplit:
    ones = np.ones((n, 4), dtype=np.int64)
    return TokenizedSplit(ones, ones, np.zeros_like(ones), np.zeros(n, dtype=np.int64))


def _fit(scores: list[float], **settings):
    model, seen = Scalar(), []

    def validate(m):
        seen.append(m.w.item())
        return scores[len(seen) - 1]

    s = TrainSettings(lr=0.1, batch_size=8, weight_decay=0.0, warmup_ratio=0.0, **({"epochs": 1.0} | settings))
    report = fit(model, _split(), lambda m, idx, b: -m.w, s, seed=0, validate=validate)
    return model, seen, report


def test_the_best_checkpoint_is_kept_and_the_curve_recorded():
    model, seen, report = _fit([0.5, 0.9, 0.7, 0.6], min_steps=40, evaluations=4)
    assert report["steps"] == report["planned_steps"] == 40
    assert [step for step, _ in report["curve"]] == [10, 20, 30, 40]
    assert [v for _, v in report["curve"]] == [0.5, 0.9, 0.7, 0.6]
    assert report["best_step"] == 20 and report["best_val"] == 0.9
    assert model.w.item() == pytest.approx(seen[1])  # the weights validated at step 20, not the last ones
    assert model.w.item() < seen[-1]


def test_patience_stops_after_the_floor_only():
    # no improvement after the first check: patience 2 would stop at step 30, but the floor is 50
    model, seen, report = _fit(
        [0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], min_steps=50, max_steps=80, evaluations=8, epochs=10.0, patience=2
    )
    assert report["planned_steps"] == 80
    assert report["steps"] == 50 and "stopped_early" in report
    assert report["best_step"] == 10 and model.w.item() == pytest.approx(seen[0])


def test_a_tie_keeps_the_later_checkpoint_but_does_not_reset_patience():
    model, seen, report = _fit([0.5, 0.5, 0.5, 0.5], min_steps=40, evaluations=4)
    assert report["best_step"] == 40 and model.w.item() == pytest.approx(seen[-1])
    _, _, report = _fit([0.5] * 8, min_steps=20, max_steps=80, evaluations=8, epochs=10.0, patience=2)
    assert report["steps"] == 30 and report["best_step"] == 30  # two checks without a better score after step 10


def test_keep_start_keeps_the_untrained_weights_when_training_only_makes_them_worse():
    model, seen, report = _fit([0.95, 0.9, 0.8, 0.85, 0.7], min_steps=40, evaluations=4, keep_start=True)
    assert seen[0] == 0.0 and [step for step, _ in report["curve"]] == [0, 10, 20, 30, 40]
    assert report["best_step"] == 0 and report["best_val"] == 0.95 and model.w.item() == 0.0
    # a better score later still wins, and without keep_start the start is never a candidate
    model, _, report = _fit([0.5, 0.6, 0.9, 0.7, 0.6], min_steps=40, evaluations=4, keep_start=True)
    assert report["best_step"] == 20 and model.w.item() > 0
    _, seen, report = _fit([0.95, 0.9, 0.8, 0.85], min_steps=40, evaluations=4)
    assert seen[0] > 0 and report["best_step"] == 10


def test_without_validation_nothing_changes():
    _, seen, report = _fit([], min_steps=16)
    assert report["steps"] == 16 and "curve" not in report and seen == []


# -- data-size defaults -----------------------------------------------------------------------


def test_data_size_defaults_fill_only_what_the_user_left_unset():
    small, chosen = for_data_size(RunConfig(), 500)
    assert chosen == {k: v[0] for k, v in DATA_SIZE_DEFAULTS.items()}
    assert small.teacher.freeze_word_embeddings is False and small.teacher.batch_size == 16
    large, _ = for_data_size(RunConfig(), SMALL_DATA)
    assert large.teacher.freeze_word_embeddings is True and large.teacher.batch_size == 32
    mine, chosen = for_data_size(build_config({"teacher.batch_size": 8, "distill.augment": 0}), 500)
    assert mine.teacher.batch_size == 8 and mine.distill.augment == 0
    assert "teacher.batch_size" not in chosen and "distill.augment" not in chosen


# -- baseline ---------------------------------------------------------------------------------


def test_baseline_verdict_uses_margin_and_a_binomial_test():
    task = get("sequence_classification")
    base = baseline.baseline(task, np.array([0] * 55 + [1] * 45), np.array([0] * 110 + [1] * 90))
    assert base["name"] == "majority" and base["metric"] == pytest.approx(0.55) and base["n_test"] == 200
    close = baseline.judge(0.56, base, margin=0.02, p_value=0.01)  # the teacher: a point over majority
    assert not close["beats"] and close["p_value"] == pytest.approx(binomtest(112, 200, 0.55, "greater").pvalue)
    clear = baseline.judge(0.70, base, margin=0.02, p_value=0.01)
    assert clear["beats"] and clear["p_value"] < 1e-4
    assert not baseline.judge(0.565, base, margin=0.02, p_value=1.0)["beats"]  # under the margin
    assert baseline.kept(0.65, 0.70, base) == pytest.approx(2 / 3)
    assert baseline.kept(0.65, 0.50, base) is None  # no margin to keep


# -- the transfer set -------------------------------------------------------------------------


def _dataset(train: list[str]) -> Dataset:
    texts = {"train": train, "val": ["held out val text"], "test": ["held out test text"]}
    ids = {k: np.zeros(len(v), dtype=np.int64) for k, v in texts.items()}
    return Dataset("d", "0", ["a", "b"], texts, ids)


def test_augmented_copies_are_deterministic_new_and_bounded():
    train = [f"the film number {i} was a quiet and lovely surprise" for i in range(50)]
    made = augment.augment(train, copies=3, seed=0)
    assert made == augment.augment(train, copies=3, seed=0) and made != augment.augment(train, copies=3, seed=1)
    assert 100 < len(made) <= 150 and not set(made) & set(train)
    vocab = {w for t in train for w in t.split()}
    assert all(set(t.split()) <= vocab for t in made)  # replacement words come from the training texts
    extra, report = augment.transfer_texts(
        _dataset(train), copies=3, max_examples=40, unlabeled=None, text_column="text", delimiter=None, seed=0
    )
    assert len(extra) == 40 and report["augmented"]["used"] == 40 and report["transfer"] == 90


def test_unlabeled_texts_come_first_and_never_repeat_val_or_test(tmp_path):
    f = tmp_path / "more.txt"
    f.write_text("\ufeffa new unlabeled text\r\nheld out test text\r\n\r\nanother one\r\n", encoding="utf-8")
    extra, report = augment.transfer_texts(
        _dataset(["x y z"]), copies=0, max_examples=10, unlabeled=f, text_column="text", delimiter=None, seed=0
    )
    assert extra == ["a new unlabeled text", "another one"]
    assert report["unlabeled"] == {"path": str(f), "rows": 3, "in_val_or_test": 1, "used": 2}
    csv = tmp_path / "more.csv"
    csv.write_text("id;review\n1;first text, with a comma\n2;second\n")
    with pytest.raises(DataError, match=r"has no column .text. \(columns: id, review\)"):
        augment.read_unlabeled(csv, "text")
    assert augment.read_unlabeled(csv, "review") == ["first text, with a comma", "second"]


def test_transfer_rows_follow_the_labelled_ones_and_carry_no_label():
    from edgepipe.model.load import load_tokenizer, teacher_source

    ds = _dataset(["one labelled text", "two labelled texts"])
    ds.extra = ["an added text"]
    data = ds.tokenize(load_tokenizer(teacher_source(None)), 16)
    assert len(data.transfer) == 3 and data.transfer.labels.tolist() == [0, 0, UNLABELED]
    assert (data.transfer.input_ids[:2] == data.train.input_ids).all()
    plain = _dataset(["one labelled text", "two labelled texts"])
    assert plain.key == ds.key  # the teacher's cache does not depend on the added texts
    assert plain.tokenize(load_tokenizer(teacher_source(None)), 16).key != data.key


def test_every_teacher_setting_is_in_the_fine_tune_cache_key_or_said_not_to_be():
    """A setting read by the fine-tune but left out of its cache key would reuse a stale teacher."""
    from edgepipe.config import TeacherConfig
    from edgepipe.pipeline.teacher import TRAINING_SETTINGS

    not_training = {"path", "finetune", "require_beat_baseline", "baseline_margin", "baseline_p_value"}
    assert set(TeacherConfig.model_fields) == TRAINING_SETTINGS | not_training


def test_validation_does_not_change_what_is_trained():
    """Checks run in eval mode and draw no random numbers: with the best checkpoint the last,
    the weights equal a run without validation (dropout included)."""

    def run(validate):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))

        def loss(m, idx, b):
            return m(b["attention_mask"].float()).pow(2).mean()

        s = TrainSettings(lr=0.05, batch_size=8, epochs=1.0, min_steps=24, evaluations=4)
        fit(model, _split(), loss, s, seed=0, validate=validate)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    calls = []

    def rising(m):
        m.eval()(torch.ones(2, 4))  # a forward in eval mode, as a real check (predict) does
        calls.append(1)
        return float(len(calls))

    assert torch.equal(run(None), run(rising)) and len(calls) == 4


def test_length_grouped_batches_keep_the_examples_pad_less_and_follow_the_seed():
    from edgepipe.model.train import MEGABATCH, grouped_by_length

    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 64, size=1000)
    order = np.concatenate([rng.permutation(1000), rng.permutation(1000)])[: 32 * 60]  # 60 steps of 32
    grouped = grouped_by_length(order, lengths, 32, np.random.default_rng(1))
    # the same examples, each run of 50 batches a reordering of its own slice: which texts meet stays random
    assert len(grouped) == len(order)
    step = 32 * MEGABATCH
    for s in range(0, len(order), step):
        assert sorted(grouped[s : s + step]) == sorted(order[s : s + step])

    def padded(o):  # tokens fed when each batch is trimmed to its longest text
        return sum(32 * lengths[o[i : i + 32]].max() for i in range(0, len(o), 32))

    assert padded(grouped) < 0.7 * padded(order)  # random batches of 3-63 tokens pad to ~60
    assert np.array_equal(grouped, grouped_by_length(order, lengths, 32, np.random.default_rng(1)))
    assert not np.array_equal(grouped, grouped_by_length(order, lengths, 32, np.random.default_rng(2)))
    # batch order within a run is shuffled, not longest first
    firsts = [lengths[grouped[i : i + 32]].max() for i in range(0, step, 32)]
    assert firsts != sorted(firsts, reverse=True)
