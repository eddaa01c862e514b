"""The baseline to beat: the task's metric without a model, and whether a model clearly beats it.

A run on a few hundred examples can finish green with a teacher that is barely better than always
answering the most frequent label; everything distilled from it inherits that. The teacher's test
metric is compared with the task's baseline (`Task.baseline`) by a margin and, for a proportion
such as accuracy, a one-sided binomial test on the test split (scipy's `binomtest`): "is k right
out of n likely if each answer were right with the baseline's probability?". Students are
reported by the share of the teacher's margin they kept. Reads `teacher.baseline_margin`,
`teacher.baseline_p_value`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

PROPORTIONS = ("accuracy",)  # metrics that count right answers out of n (the binomial test applies)


def baseline(task, train_labels: np.ndarray, test_labels: np.ndarray) -> dict[str, Any]:
    return task.baseline(train_labels, test_labels) | {"n_test": len(test_labels), "metric_name": task.metric}


def judge(value: float, base: dict[str, Any], *, margin: float, p_value: float) -> dict[str, Any]:
    """Does `value` (a model's test metric) clearly beat the baseline?"""
    out: dict[str, Any] = {"value": value, "margin": value - base["metric"]}
    significant = True
    if base["metric_name"] in PROPORTIONS:
        n = base["n_test"]
        p0 = min(max(base["metric"], 1e-12), 1 - 1e-12)
        out["p_value"] = float(binomtest(round(value * n), n, p0, alternative="greater").pvalue)
        significant = out["p_value"] < p_value
    out["beats"] = bool(out["margin"] >= margin and significant)
    return out


def kept(value: float, teacher: float, base: dict[str, Any]) -> float | None:
    """The share of the teacher's margin over the baseline a student kept (1.0 = all of it)."""
    gap = teacher - base["metric"]
    return None if gap <= 0 else (value - base["metric"]) / gap


def teacher_line(base: dict[str, Any], verdict: dict[str, Any]) -> str:
    name, metric = base["name"], base["metric_name"]
    p = f", p={verdict['p_value']:.2g}" if "p_value" in verdict else ""
    return (
        f"teacher test {metric} {verdict['value'] * 100:.1f}% vs {name} baseline {base['metric'] * 100:.1f}% "
        f"({verdict['margin'] * 100:+.1f} points{p})"
    )
