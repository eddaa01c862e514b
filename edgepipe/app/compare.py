"""`edgepipe bench --compare RUN_A RUN_B`: the same measurements of two runs side by side, each pair
checked for the conditions it was taken under (edgepipe/conditions.py).

A pair is matched on (device, model, artifact, threads, batch, seq_len, n_eval). A pair whose
conditions differ (governor, cores, charging, CPU, emulation, sensors) or that was measured hot is
shown with the reason and left out of the summary ratio; when no pair is comparable the comparison
is refused with one line (ComparisonError), because a ratio of such numbers would mislead.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from edgepipe import conditions
from edgepipe.errors import ComparisonError
from edgepipe.manifest import Benchmark, Manifest


@dataclass
class Pair:
    a: Benchmark
    b: Benchmark
    problems: list[str] = field(default_factory=list)  # why the two should not be compared

    @property
    def comparable(self) -> bool:
        return not self.problems

    @property
    def ratio(self) -> float | None:
        """B's p50 over A's: below 1, B is faster."""
        pa, pb = self.a.latency_ms.p50, self.b.latency_ms.p50
        return pb / pa if pa and pb else None


def pairs(a: Manifest, b: Manifest) -> list[Pair]:
    rows_b = {row.identity(): row for row in b.benchmarks}
    out = []
    for row_a in a.benchmarks:
        row_b = rows_b.get(row_a.identity())
        if row_b is None:
            continue
        problems = conditions.differences([row_a, row_b])
        for name, row in (("A", row_a), ("B", row_b)):
            if conditions.not_recorded(row):
                problems.append(f"conditions not recorded in {name} (measured before edgepipe recorded them)")
            if reasons := conditions.hot(row):
                problems.append(f"measured hot in {name}: {'; '.join(reasons)}")
        out.append(Pair(row_a, row_b, problems))
    return out


def compare(a: Manifest, b: Manifest, name_a: str, name_b: str) -> tuple[list[Pair], float | None]:
    """The matched pairs and the median p50 ratio B/A over the comparable ones; refuses when none is."""
    matched = pairs(a, b)
    if not matched:
        raise ComparisonError(
            f"{name_a} and {name_b} share no measurement (same device, model, artifact, threads, batch, length); "
            f"benchmark one with the other's settings (`edgepipe bench {name_b} --device ...`)"
        )
    good = [p.ratio for p in matched if p.comparable and p.ratio is not None]
    if not good:
        said = list(dict.fromkeys(problem for p in matched for problem in p.problems))
        differ = [t for t in said if not t.startswith(("conditions not recorded", "measured hot"))]
        first = "; ".join((differ or said)[:2])
        raise ComparisonError(
            f"none of the {len(matched)} shared measurements of {name_a} and {name_b} was taken under the same "
            f"conditions ({first}); rerun one of them under the other's conditions"
        )
    return matched, statistics.median(good)
