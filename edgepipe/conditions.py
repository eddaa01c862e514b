"""When two measurements may be compared: the conditions recorded with each benchmark row.

A latency taken with the `performance` governor is not comparable with one taken under `schedutil`,
nor a run on USB power with one on battery, nor a throttled run with a cool one. The report marks
such mixtures (and never draws them on one Pareto front without a warning); `edgepipe bench --compare`
flags each pair whose conditions differ and refuses when no pair is comparable.
"""

from __future__ import annotations

from typing import Any

from edgepipe.manifest import Benchmark

# what decides a latency or an energy figure besides the model itself
COMPARED = ("cpu", "emulated", "sensors", "governors", "cores_used", "pinned_cores", "charging", "screen")


def signature(row: Benchmark) -> dict[str, Any]:
    """The row's conditions, as plain values; None where the row (an older runner's) did not record one."""
    info, cond = row.device_info or {}, row.conditions
    values = {
        "cpu": info.get("cpu"),
        "emulated": info.get("emulated"),
        "pinned_cores": info.get("pinned_cores") or "not pinned",
    }
    if cond is not None:
        values |= {
            "sensors": cond.sensors,
            "governors": cond.governors,
            "cores_used": cond.cores_used,
            "charging": cond.charging,
            "screen": cond.screen,
        }
    return {key: _plain(values.get(key)) for key in COMPARED}


def _plain(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("not available"):
        return None  # unknown on both sides is not a difference
    return tuple(value) if isinstance(value, list) else value


def differences(rows: list[Benchmark]) -> list[str]:
    """One text per condition on which the rows disagree ("governors: performance / schedutil")."""
    sigs = [signature(r) for r in rows]
    out = []
    for key in COMPARED:
        seen = list(dict.fromkeys(s[key] for s in sigs if s[key] is not None))
        if len(seen) > 1:
            out.append(f"{key}: " + " / ".join(_show(v) for v in seen))
    return out


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def hot(row: Benchmark) -> list[str]:
    return row.thermal.hot_reasons() if row.thermal is not None else []


def not_recorded(row: Benchmark) -> bool:
    return row.conditions is None
