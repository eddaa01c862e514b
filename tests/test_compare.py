"""`edgepipe bench --compare RUN_A RUN_B`: pairs matched by identity, each checked for its conditions;
refused in one line when nothing can be compared. Run dirs hold the fixture manifest (tests/fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures import manifest_dict
from typer.testing import CliRunner

from edgepipe.app.cli import app
from edgepipe.app.compare import compare
from edgepipe.manifest import Manifest

CONDITIONS = {
    "cores_used": [0, 1],
    "governors": ["performance"],
    "load_avg": [0.2, 0.2, 0.2],
    "power": {"charging": False},
    "screen": "not available",
    "sensors": "device",
}


def run_dir(path: Path, scale: float = 1.0, conditions: dict | None = CONDITIONS, edit=None) -> Path:
    """The fixture manifest, latencies times `scale`, every row with `conditions`; `edit(rows)` for the rest."""
    m = manifest_dict()
    for row in m["benchmarks"]:
        row["latency_ms"] = {k: (v * scale if isinstance(v, float) else v) for k, v in row["latency_ms"].items()}
        if conditions is not None:
            row["conditions"] = json.loads(json.dumps(conditions))
            row["thermal"] = {"throttled": False, "reasons": []}
    if edit is not None:
        edit(m["benchmarks"])
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps(m))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, ["bench", "--compare", *map(str, args)], catch_exceptions=False)


def test_same_conditions_compare_pair_by_pair(tmp_path):
    a, b = run_dir(tmp_path / "a"), run_dir(tmp_path / "b", scale=0.5)
    matched, median = compare(Manifest.load(a), Manifest.load(b), "a", "b")
    assert len(matched) == 21 and all(p.comparable for p in matched)  # every row of the fixture, on both devices
    assert median == pytest.approx(0.5) and all(p.ratio == pytest.approx(0.5) for p in matched)
    result = cli(a, b)
    assert result.exit_code == 0, result.output
    assert "median p50 B / A over the 21 comparable pairs: 0.50 (0 pairs left out)" in result.output


def test_pairs_under_different_conditions_or_hot_are_flagged_and_left_out(tmp_path):
    def edit(rows):
        rows[0]["conditions"]["governors"] = ["schedutil"]
        rows[1]["conditions"]["power"] = {"charging": True}
        rows[2]["thermal"] = {"throttled": True, "reasons": ["Android thermal status 2 (moderate)"]}
        rows[3]["latency_ms"]["p50"] *= 10  # a pair left out does not move the median

    a, b = run_dir(tmp_path / "a"), run_dir(tmp_path / "b", scale=0.8, edit=edit)
    matched, median = compare(Manifest.load(a), Manifest.load(b), "a", "b")
    assert [p.problems for p in matched[:3]] == [
        ["governors: performance / schedutil"],
        ["charging: False / True"],
        ["measured hot in B: Android thermal status 2 (moderate)"],
    ]
    assert sum(p.comparable for p in matched) == 18 and median == pytest.approx(0.8)
    result = cli(a, b)
    assert result.exit_code == 0 and "(3 pairs left out)" in result.output


@pytest.mark.parametrize(
    ("b_conditions", "edit", "says"),
    [
        (
            {**CONDITIONS, "governors": ["powersave"]},
            None,
            "was taken under the same conditions (governors: performance / powersave)",
        ),
        (None, None, "conditions not recorded in B"),
        (
            CONDITIONS,
            lambda rows: [r["device_info"].update(pinned_cores="4-7") for r in rows],
            "pinned_cores: not pinned / 4-7",
        ),
        (CONDITIONS, lambda rows: rows.clear(), "share no measurement"),
    ],
)
def test_nothing_comparable_is_refused_in_one_line(tmp_path, b_conditions, edit, says):
    a, b = run_dir(tmp_path / "a"), run_dir(tmp_path / "b", conditions=b_conditions, edit=edit)
    result = CliRunner().invoke(app, ["bench", "--compare", str(a), str(b)])
    assert result.exit_code == 10, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.output


def test_compare_takes_two_runs_and_bench_one(tmp_path):
    a = run_dir(tmp_path / "a")
    result = CliRunner().invoke(app, ["bench", "--compare", str(a)])
    assert result.exit_code == 2 and "--compare takes two run directories (1 given)" in result.output
    result = CliRunner().invoke(app, ["bench", str(a), str(a)])
    assert result.exit_code == 2 and "to compare two runs add --compare" in result.output
