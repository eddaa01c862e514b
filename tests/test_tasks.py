"""Every registered task (edgepipe/tasks) against the same contract, with hand-computed numbers.

A task without an entry in CASES fails `test_every_task_is_tested`; each task's metric must be
one the standalone device runner computes under the same name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgepipe.devices.standalone.runner import METRICS
from edgepipe.tasks import TASKS, get

# task -> (outputs of two models for 4 examples, labels, hand-computed expectations)
CASES = {
    "sequence_classification": {
        "outputs": np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0], [5.0, -1.0]], dtype=np.float32),
        "reference": np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [4.0, 0.0]], dtype=np.float32),
        "labels": np.array([0, 1, 0, 0]),
        # outputs' argmax 0,1,1,0 vs labels 0,1,0,0: 3 of 4; reference argmax 0,1,0,0: 4 of 4; they agree on 3 of 4
        "metric": 0.75,
        "reference_metric": 1.0,
        "agreement": 0.75,
        # train labels 0,0,0,1 (prior 3/4, 1/4); test labels 0,1,0,0 (3/4, 1/4): majority = label 0 -> 3/4,
        # stratified = 3/4*3/4 + 1/4*1/4 = 10/16
        "train_labels": np.array([0, 0, 0, 1]),
        "baseline": {"name": "majority", "metric": 0.75, "majority": 0.75, "stratified": 0.625},
    },
}
# a pair is framed into one input by the tokenizer; from the logits on, it is sequence classification
CASES["pair_classification"] = CASES["sequence_classification"]
CASES["embedding"] = {
    # 4 texts in 2 dims; labels are the teacher's embeddings. Cosines to the labels: 1, 1, 0 (orthogonal), 0.6
    "outputs": np.array([[1, 0], [0, 2], [1, 0], [0.6, 0.8]], dtype=np.float32),
    "reference": np.array([[1, 0], [0, 1], [0, 1], [0.8, 0.6]], dtype=np.float32),
    "labels": np.array([[1, 0], [0, 1], [0, 1], [1, 0]], dtype=np.float32),
    "metric": (1 + 1 + 0 + 0.6) / 4,
    "reference_metric": (1 + 1 + 1 + 0.8) / 4,
    "agreement": (1 + 1 + 0 + 0.96) / 4,  # outputs vs reference: row 4 is 0.6*0.8 + 0.8*0.6
    # one vector for every text: the mean training embedding (1, 1)/2, cosine 1/sqrt(2) to each axis
    "train_labels": np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32),
    "baseline": {"metric": 2**-0.5},
}
CASES["token_classification"] = {
    # 2 sentences, 4 positions, tags O=0 B=1 I=2 (one entity type); -100 where no word starts
    "outputs": np.array(
        [[[5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]], [[5, 0, 0], [5, 0, 0], [5, 0, 0], [0, 0, 0]]], dtype=np.float32
    ),
    "reference": np.array(
        [[[5, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]], [[5, 0, 0], [5, 0, 0], [0, 5, 0], [0, 0, 0]]], dtype=np.float32
    ),
    "labels": np.array([[-100, 1, 2, 0], [-100, 0, 1, -100]]),
    # words: sentence 1 B I O (predicted B I O), sentence 2 O B (predicted O O): 1 of 2 entities found, 1 found
    # -> F1 = 2 * 1 / (1 + 2); the reference finds both
    "metric": 2 / 3,
    "reference_metric": 1.0,
    "agreement": 6 / 7,  # 7 real positions (sentence 2's last is padding: zeros), one differs
    "train_labels": np.array([[-100, 1, 0, 0], [-100, 0, 0, -100]]),
    # tagging every word O finds no entity; 2 of the 5 test words are O
    "baseline": {"name": "no entities", "metric": 0.0, "token_accuracy": 0.4},
}
CASES["multi_label"] = {
    # 3 labels; a label is on where its output > 0: decisions 101, 010, 110, 001 vs labels 101, 010, 100, 000
    "outputs": np.array([[1, -1, 2], [-1, 1, -1], [1, 1, -1], [-2, -1, 1]], dtype=np.float32),
    "reference": np.array([[1, -1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, -1]], dtype=np.float32),
    "labels": np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]]),
    # TP 4, FP 2 (row 3's label 1, row 4's label 2), FN 0: micro-F1 = 8 / 10; the reference decides exactly
    "metric": 0.8,
    "reference_metric": 1.0,
    "agreement": 10 / 12,  # 12 decisions, the same 2 differ
    # train frequencies label 0: 3, label 2: 2, label 1: 1. Every text gets the top k: k=1 TP 2 FP 2 FN 2 -> 0.5;
    # k=2 TP 3 FP 5 FN 1 -> 0.5; k=3 TP 4 FP 8 -> 0.5: a tie, the smallest k
    "train_labels": np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [0, 0, 1]]),
    "baseline": {"metric": 0.5, "k": 1},
}


def test_every_task_is_tested():
    assert set(TASKS) == set(CASES), "add each registered task to CASES"


@pytest.mark.parametrize("name", sorted(CASES))
def test_metric_agreement_and_the_int8_comparison_record(name):
    task, case = get(name), CASES[name]
    assert task.metric in METRICS, "the device runner must compute the task's metric under its name"
    assert task.score(case["outputs"], case["labels"]) == pytest.approx(case["metric"])
    assert METRICS[task.metric](case["outputs"], case["labels"]) == pytest.approx(case["metric"])
    assert task.agreement(case["outputs"], case["reference"]) == pytest.approx(case["agreement"])
    record = task.compare(case["outputs"], case["reference"], case["labels"])
    assert {f"test_{k}" for k in task.scores(case["outputs"], case["labels"])} <= set(record)  # the others too
    record = {k: record[k] for k in (f"test_{task.metric}", f"fp32_test_{task.metric}", task.agreement_name)}
    assert record == pytest.approx(
        {
            f"test_{task.metric}": case["metric"],
            f"fp32_test_{task.metric}": case["reference_metric"],
            task.agreement_name: case["agreement"],
        }
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_baseline_without_a_model_is_hand_computed(name):
    task, case = get(name), CASES[name]
    got = task.baseline(case["train_labels"], case["labels"])
    assert {k: got[k] for k in case["baseline"]} == pytest.approx(case["baseline"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_distillation_loss_is_zero_on_the_teachers_own_outputs_without_a_task_loss(name):
    task, case = get(name), CASES[name]
    z = torch.from_numpy(case["outputs"])
    loss = task.distillation_loss(temperature=2.0, alpha=1.0)(z, z.clone(), torch.from_numpy(case["labels"]))["loss"]
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_seeded_head_is_reproducible_and_the_card_names_the_output(name):
    task = get(name)
    a = task.build_head(8, ["x", "y", "z"], 0.02, torch.Generator().manual_seed(3))
    b = task.build_head(8, ["x", "y", "z"], 0.02, torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    card = task.card(["x", "y", "z"])
    labels = [] if task.label_kind == "teacher" else ["x", "y", "z"]  # an embedding has no labels
    assert card["name"] == name and card["labels"] == labels and card["output"] in task.output_names


def test_an_unknown_task_is_a_config_error():
    from edgepipe.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown task 'ranking'; edgepipe knows embedding, multi_label, pair_"):
        get("ranking")


@pytest.mark.parametrize(
    "requested, columns, teacher_task, expected",
    [
        ("auto", ["text", "label"], None, "sequence_classification"),
        ("auto", ["text_a", "text_b", "label"], None, "pair_classification"),
        # a ...ForSequenceClassification checkpoint does not say whether it read pairs: the columns do
        ("auto", ["text_a", "text_b", "label"], "sequence_classification", "pair_classification"),
        ("auto", ["text", "label"], "pair_classification", "pair_classification"),  # an edgepipe-saved pair model
        ("auto", ["text", "labels"], None, "multi_label"),
        ("auto", ["text"], None, "embedding"),  # texts alone: nothing to classify
        ("auto", ["text", "sentiment"], None, "embedding"),
        ("auto", [], None, "sequence_classification"),  # the built-in data
        ("auto", ["tokens", "tags"], None, "token_classification"),
        ("sequence_classification", ["text_a", "text_b", "label"], None, "sequence_classification"),
    ],
)
def test_the_task_is_the_one_asked_for_else_the_teachers_else_the_datas(requested, columns, teacher_task, expected):
    from edgepipe.tasks import resolve

    assert resolve(requested, columns, teacher_task).name == expected


def test_the_card_says_how_many_texts_go_in():
    assert get("sequence_classification").card(["a", "b"])["inputs"] == "text"
    assert get("pair_classification").card(["a", "b"])["inputs"] == "text_pair"


def test_multi_label_macro_f1_and_exact_match_are_hand_computed():
    case = CASES["multi_label"]
    got = get("multi_label").scores(case["outputs"], case["labels"])
    # per label F1: label 0 TP 2 -> 1; label 1 TP 1 FP 1 -> 2/3; label 2 TP 1 FP 1 -> 2/3; rows 1 and 2 exact
    assert got == pytest.approx({"micro_f1": 0.8, "macro_f1": (1 + 2 / 3 + 2 / 3) / 3, "exact_match": 0.5})


def test_multi_label_thresholds_are_tuned_per_label_and_folded_into_the_bias():
    """Outputs shifted per label away from 0: the tuned cut of each label separates its positives (F1 1),
    and after the fold the model's own outputs decide right at 0."""
    from torch import nn

    from edgepipe.tasks.multi_label import best_thresholds

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(200, 3))
    shift = np.array([2.0, -1.5, 0.7], dtype=np.float32)
    outputs = (labels * 2 - 1).astype(np.float32) * rng.uniform(0.2, 1.0, size=(200, 3)) + shift
    task = get("multi_label")
    assert task.score(outputs, labels) < 0.9  # untuned, the shifted labels are wrong
    cuts = best_thresholds(outputs, labels)
    assert task.score(outputs - cuts, labels) == 1.0 == task.tuned_score(outputs, labels)
    model = nn.Module()
    model.head = nn.Linear(4, 3)
    before = model.head.bias.detach().clone()
    record = task.calibrate(model, outputs, labels)
    assert torch.allclose(model.head.bias, before - torch.from_numpy(cuts))
    assert record["threshold_logits"] == pytest.approx(cuts.tolist())
    assert record["thresholds"] == pytest.approx((1 / (1 + np.exp(-cuts))).tolist())
    assert task.card(["a", "b", "c"], record)["thresholds"] == dict(zip("abc", record["thresholds"]))


def test_embedding_neighbour_overlap_is_hand_computed():
    """Each text's nearest other texts in 4 texts on a circle (angles 0, 0.1, 1.6, 1.7)."""
    from edgepipe.tasks.embedding import neighbour_overlap

    angles = np.array([0.0, 0.1, 1.6, 1.7])
    ref = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert neighbour_overlap(ref, ref, k=1) == 1.0
    # texts 1 and 3 swap places: nearest before 0-1, 1-0, 2-3, 3-2; after 0-3, 1-2, 2-1, 3-0: none kept
    assert neighbour_overlap(ref[[0, 3, 2, 1]], ref, k=1) == 0.0
    # k=2: before {1,2} {0,2} {3,1} {2,1}; after {3,2} {2,3} {1,3} {0,2}: kept 1, 1, 2, 1 of 2 -> 5/8
    assert neighbour_overlap(ref[[0, 3, 2, 1]], ref, k=2) == 0.625
    assert get("embedding").scores(ref, ref) == {"mean_cosine": pytest.approx(1.0), "top10_overlap": 1.0}


def test_token_classification_scores_are_hand_computed_and_spans_follow_seqeval():
    from edgepipe.tasks.token_classification import layout, spans

    assert layout(["LOC", "PER"]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    # B-LOC I-LOC O B-PER I-PER I-LOC(another type: a new entity) I-LOC(continues it) B-LOC(a new one)
    assert spans([1, 2, 0, 3, 4, 2, 2, 1]) == {(0, 2, 0), (3, 5, 1), (5, 7, 0), (7, 8, 0)}
    assert spans([2, 2, 0]) == {(0, 2, 0)}  # an I after O starts an entity (seqeval's default, lenient)
    case = CASES["token_classification"]
    got = get("token_classification").scores(case["outputs"], case["labels"])
    assert got == pytest.approx(
        {"entity_f1": 2 / 3, "entity_precision": 1.0, "entity_recall": 0.5, "token_accuracy": 0.8}
    )


def test_the_linear_probe_reads_the_signal_the_embeddings_carry():
    from edgepipe.tasks.embedding import linear_probe

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    signal = rng.normal(size=(400, 8)).astype(np.float32)
    signal[:, 0] += 3 * (2 * y - 1)  # class on one axis
    assert linear_probe(signal[:300], y[:300], signal[300:], y[300:]) >= 0.95
    noise = rng.normal(size=(400, 8)).astype(np.float32)
    assert 0.3 < linear_probe(noise[:300], y[:300], noise[300:], y[300:]) < 0.7
    assert linear_probe(signal[:300], y[:300], signal[300:], y[300:]) == linear_probe(
        signal[:300], y[:300], signal[300:], y[300:]
    )  # deterministic


def test_sequence_classification_reports_macro_f1_beside_accuracy():
    """Imbalanced: 9 of 10 texts are class 0 and the model always says 0: accuracy 0.9, macro-F1 shows
    the missed class (class 0 F1 = 18/19, class 1 F1 = 0)."""
    labels = np.array([0] * 9 + [1])
    outputs = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (10, 1))
    got = get("sequence_classification").scores(outputs, labels)
    assert got == pytest.approx({"accuracy": 0.9, "macro_f1": (18 / 19 + 0) / 2})
