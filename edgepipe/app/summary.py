"""The terminal summary: one row per model, what it costs and what it keeps."""

from __future__ import annotations

from rich.table import Table

from edgepipe.manifest import Artifact, Manifest
from edgepipe.measurement import Measured


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.1f}" if n else "-"


def _ms(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "-"


def _pct(v: float | None) -> str:
    return f"{v * 100:.1f}%" if v is not None else "-"


def check_cell(art: Artifact) -> str:
    """An artifact's export check: parity against PyTorch (fp32), else its agreement with its source
    (int8 with fp32; the ORT-format model with its ONNX) under the task's name for it
    (`argmax_agreement`, `label_agreement`, ...)."""
    if art.get("parity_max_abs") is not None:
        return f"{art.get('parity_max_abs'):.1e}"
    extra = art.model_extra or {}
    # the test-split agreement, not the int8 budget loop's validation tries (val_, first_try_, dynamic_...)
    tries = ("val_", "first_try_", "dynamic_", "static_", "budget_")
    for suffix in ("_agreement", "_agreement_vs_onnx"):
        key = next((k for k in extra if k.endswith(suffix) and not k.startswith(tries) and extra[k] is not None), None)
        if key is not None:
            return f"{extra[key] * 100:.1f}%"
    return "-"


def baseline_caption(manifest: Manifest) -> str:
    """The teacher's margin over the baseline and the share of it each smaller model kept."""
    base, metric = manifest.baseline or {}, manifest.metric
    t = base.get("teacher") or {}
    parts = [f"{base['name']} baseline {base['metric'] * 100:.1f}% test {metric}"]
    if t:
        parts.append(
            f"teacher {t['margin'] * 100:+.1f} points" + (f" (p={t['p_value']:.2g})" if "p_value" in t else "")
        )
    kept = [
        f"{role} kept {m.baseline_margin_kept * 100:.0f}%"
        for role, m in manifest.models.items()
        if m.baseline_margin_kept is not None
    ]
    if kept:
        parts.append(", ".join(kept) + " of the teacher's margin")
    return "; ".join(parts)


def summary_table(manifest: Manifest) -> Table:
    """The stage ladder: model facts once per model, then one row per artifact and device."""
    metric = manifest.metric
    table = Table(title="edgepipe: " + " -> ".join(manifest.models), title_justify="left")
    cols = (
        "model",
        "params (M)",
        "MACs (M)",
        f"{metric} (PyTorch)",
        "artifact",
        "size (MB)",
        "parity / agreement",
        "device",
        "threads",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        f"{metric} (runtime)",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "artifact", "device") else "right")
    base = manifest.baseline
    if base:
        table.add_row(f"no model ({base['name']})", "-", "-", _pct(base["metric"]), *["-"] * (len(cols) - 4))
        table.caption = baseline_caption(manifest)
        table.caption_justify = "left"
    for role, m in manifest.models.items():
        first = True
        for name, art in m.artifacts.items():
            for b in manifest.benchmarks_of(role, name) or [None]:
                lat = b.latency_ms if b else None
                model_cells = (
                    (role, f"{m.params / 1e6:.2f}", f"{(m.macs or 0) / 1e6:.0f}", _pct(m.get(metric)))
                    if first
                    else ("", "", "", "")
                )
                first = False
                table.add_row(
                    *model_cells,
                    name,
                    _mb(art.bytes),
                    check_cell(art),
                    b.device_label if b else "-",
                    str(b.threads) if b else "-",
                    _ms(lat.p50 if lat else None),
                    _ms(lat.p90 if lat else None),
                    _ms(lat.p99 if lat else None),
                    _pct(b.score) if b else "-",
                )
    return table


def bench_table(results: list[Measured]) -> Table:
    """`edgepipe bench MODEL`: one row per device, the runner's own fields."""
    table = Table(title="edgepipe bench", title_justify="left")
    for col in (
        "device",
        "model",
        "runtime",
        "delegate",
        "threads",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "metric",
        "n",
    ):
        table.add_column(
            col, justify="left" if col in ("device", "model", "runtime", "delegate", "metric") else "right"
        )
    for r in results:
        lat = r.latency_ms
        emulated = (r.device_info or {}).get("emulated")
        device = f"{r.device} (emulated: {emulated})" if emulated else str(r.device)
        value = f"{r.metric} {r.metric_value * 100:.2f}%" if r.metric_value is not None else "-"
        table.add_row(
            device,
            str(r.model),
            f"{r.runtime} {r.runtime_version or ''}".strip(),
            str(r.delegate),
            str(r.threads),
            _ms(lat.p50),
            _ms(lat.p90),
            _ms(lat.p99),
            _ms(lat.mean),
            value,
            str(r.n_eval),
        )
    return table
