"""Pareto fronts: the report's latency/accuracy front and the budget search's latency/size/accuracy front."""

from __future__ import annotations


def undominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of points no other point beats: no worse on every objective (all minimised) and better on one."""

    def beats(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, score) points on the front, by latency: nothing else is both faster and better."""
    return sorted(undominated([(lat, -score) for lat, score in points]), key=lambda i: points[i][0])
