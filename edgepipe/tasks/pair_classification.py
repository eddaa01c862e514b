"""Pair classification: one label per pair of texts (duplicate questions, entailment, same/different).

The two texts go into one input as the teacher's tokenizer frames a pair ([CLS] a [SEP] b [SEP]
with token_type_ids 0/1 for BERT-likes, <s> a </s></s> b </s> for RoBERTa/XLM-R), truncated
longest-first to the sequence length; the model, losses and metric are sequence classification's.
The TFLite Task Library's BertNLClassifier and MediaPipe's TextClassifier take one text, so the
bundle's app code frames the pair itself (the reference app_check.py does).
"""

from __future__ import annotations

from typing import Any

from edgepipe.tasks.base import register
from edgepipe.tasks.sequence_classification import SequenceClassification


@register
class PairClassification(SequenceClassification):
    name = "pair_classification"
    inputs = "text_pair"
    signature_columns = ("text_a", "text_b")
    task_library = None
    app_api = None
    task_library_gap = (
        "MediaPipe's TextClassifier and the Task Library's BertNLClassifier tokenize one text per call; a pair "
        "model reads two texts in one input (frame them with the tokenizer's pair template, as app_check.py does)"
    )

    def card(self, labels: list[str], calibration: dict[str, Any] | None = None) -> dict[str, Any]:
        return super().card(labels, calibration) | {
            "inputs": "text_pair",
            "framing": "the tokenizer's pair template (BERT: [CLS] a [SEP] b [SEP], segment ids 0 then 1), truncated longest-first",
        }
