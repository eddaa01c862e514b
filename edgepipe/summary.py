"""The terminal summary: one row per model, what it costs and what it keeps."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f}" if n else "-"


def _ms(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "-"


def device_label(b: dict[str, Any]) -> str:
    """Emulated boards are plumbing checks, not performance numbers: say so wherever a latency is shown."""
    emulated = (b.get("device_info") or {}).get("emulated")
    return f"{b['device']} (emulated: {emulated})" if emulated else b["device"]


def summary_table(manifest: dict[str, Any]) -> Table:
    """The stage ladder: model facts once per model, then one row per artifact and device."""
    table = Table(title="edgepipe: " + " -> ".join(manifest["models"]), title_justify="left")
    cols = ("model", "params (M)", "MACs (M)", "accuracy (PyTorch)", "artifact", "size (MB)", "parity / agreement",
            "device", "threads", "p50 ms", "p90 ms", "p99 ms", "accuracy (runtime)")  # fmt: skip
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "artifact", "device") else "right")
    for role, m in manifest["models"].items():
        first = True
        for name, art in m.get("artifacts", {}).items():
            benches = [b for b in manifest["benchmarks"] if b["model"] == role and b["artifact"] == name] or [None]
            if "parity_max_abs" in art:
                parity = f"{art['parity_max_abs']:.1e}"
            elif "argmax_agreement" in art:
                parity = f"{art['argmax_agreement'] * 100:.1f}%"
            else:
                parity = "-"
            for b in benches:
                lat = b["latency_ms"] if b else {}
                model_cells = (role, f"{m['params'] / 1e6:.2f}", f"{m['macs'] / 1e6:.0f}", f"{m['accuracy'] * 100:.1f}%") if first else ("", "", "", "")
                first = False
                table.add_row(
                    *model_cells,
                    name,
                    _mb(art.get("bytes")),
                    parity,
                    device_label(b) if b else "-",
                    str(b["threads"]) if b else "-",
                    _ms(lat.get("p50")),
                    _ms(lat.get("p90")),
                    _ms(lat.get("p99")),
                    f"{b['accuracy'] * 100:.1f}%" if b and b.get("accuracy") is not None else "-",
                )
    return table


def bench_table(results: list[dict[str, Any]]) -> Table:
    """`edgepipe bench MODEL`: one row per device, the runner's own fields."""
    table = Table(title="edgepipe bench", title_justify="left")
    for col in ("device", "model", "runtime", "delegate", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "accuracy", "n"):
        table.add_column(col, justify="left" if col in ("device", "model", "runtime", "delegate") else "right")
    for r in results:
        lat = r["latency_ms"]
        acc = f"{r['accuracy'] * 100:.2f}%" if r.get("accuracy") is not None else "-"
        table.add_row(device_label(r), r["model"], f"{r['runtime']} {r.get('runtime_version') or ''}".strip(), str(r.get("delegate")),
                      str(r["threads"]), _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")), _ms(lat.get("mean")), acc, str(r.get("n_eval", "-")))  # fmt: skip
    return table
