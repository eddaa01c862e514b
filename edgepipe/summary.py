"""The terminal summary: one row per model, what it costs and what it keeps."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f}" if n else "-"


def summary_table(manifest: dict[str, Any]) -> Table:
    table = Table(title="edgepipe: " + " -> ".join(manifest["models"]), title_justify="left")
    for col in ("model", "params (M)", "layers", "accuracy (PyTorch)", "artifact", "size (MB)", "parity", "device", "threads", "p50 ms", "p90 ms", "p99 ms", "accuracy (runtime)"):
        table.add_column(col, justify="left" if col in ("model", "artifact", "device") else "right")
    for role, m in manifest["models"].items():
        for name, art in m.get("artifacts", {}).items():
            benches = [b for b in manifest["benchmarks"] if b["model"] == role and b["artifact"] == name] or [None]
            for b in benches:
                lat = b["latency_ms"] if b else {}
                table.add_row(
                    role,
                    f"{m['params'] / 1e6:.2f}",
                    str(m.get("layers", "-")),
                    f"{m['accuracy'] * 100:.1f}%",
                    name,
                    _mb(art.get("bytes")),
                    f"{art['parity_max_abs']:.1e}" if "parity_max_abs" in art else "-",
                    b["device"] if b else "-",
                    str(b["threads"]) if b else "-",
                    f"{lat['p50']:.2f}" if b else "-",
                    f"{lat['p90']:.2f}" if b else "-",
                    f"{lat['p99']:.2f}" if b else "-",
                    f"{b['accuracy'] * 100:.1f}%" if b and b.get("accuracy") is not None else "-",
                )
    return table
