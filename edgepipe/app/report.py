"""The report people look at: `DIR/report.html` (one self-contained file, opens offline) and
`DIR/report.md`, rebuilt from manifests only, so `edgepipe report` can redo and compare runs.

It opens with what to ship: per device, the shipped artifact with its size, latency and
metric, and the ratios against the teacher measured on the same device. A run that
`python -m bench` measured (its `goals.json`) also shows the goals, the latency at real
lengths, how latency grows with length and batch, and wall time by training-set size. Plots are matplotlib
SVG with text drawn as paths, inlined into the HTML: no script, no font, no CDN, nothing
fetched. Emulated devices are labelled wherever a latency appears.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from edgepipe import conditions
from edgepipe.app.summary import check_cell
from edgepipe.manifest import ROLES, Benchmark, Manifest
from edgepipe.pareto import pareto
from edgepipe.rundir import write_bytes_atomic

Runs = list[tuple[str, Manifest]]
SHIPPABLE = ("tflite_int8", "ort", "onnx_int8", "executorch_int8")  # what the app bundles pack, best-supported first


def _fmt(v: Any, spec: str = ".2f", scale: float = 1.0, suffix: str = "") -> str:
    return "-" if v is None else f"{v * scale:{spec}}{suffix}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}×"


# -- what to ship --------------------------------------------------------------------------


def shipped_choice(m: Manifest, device: str) -> Benchmark | None:
    """The shipped model's artifact for `device`: the budget search's format on its device, else the
    fastest bundled int8 artifact measured there (at the run's thread count, on the full evaluation)."""
    threads = m.config.get("bench", {}).get("threads", 1)
    rows = [
        b
        for b in m.benchmarks
        if b.device == device and b.model == m.shipped and b.artifact in SHIPPABLE and b.threads == threads
    ]
    if not rows:
        return None
    n = max(b.n_eval or 0 for b in rows)
    rows = [b for b in rows if (b.n_eval or 0) == n]
    chosen = (m.search or {}).get("chosen") or {}
    searched = [b for b in rows if (m.search or {}).get("device") == device and b.artifact == chosen.get("format")]
    return searched[0] if searched else min(rows, key=lambda b: b.latency_ms.p50 or float("inf"))


def teacher_reference(m: Manifest, pick: Benchmark) -> Benchmark | None:
    """The teacher measured the same way: same device and threads, fp32 in the same runtime when there is one."""
    same = {"tflite": "tflite_fp32", "executorch": "executorch_fp32"}.get(pick.artifact.split("_")[0], "onnx_fp32")
    rows = [b for b in m.benchmarks if b.device == pick.device and b.model == "teacher" and b.threads == pick.threads]
    return next((b for name in (same, "onnx_fp32") for b in rows if b.artifact == name), None)


def ship_rows(m: Manifest) -> list[list[str]]:
    rows = []
    for device in dict.fromkeys(b.device for b in m.benchmarks):
        pick = shipped_choice(m, device)
        if pick is None:
            continue
        art = m.artifact(pick.model, pick.artifact)
        ref = teacher_reference(m, pick)
        teacher_bytes = m.artifact("teacher", "onnx_fp32").bytes if m.artifact("teacher", "onnx_fp32") else None
        size_x = teacher_bytes / art.bytes if teacher_bytes and art else None
        speed_x = (
            ref.latency_ms.p50 / pick.latency_ms.p50 if ref and ref.latency_ms.p50 and pick.latency_ms.p50 else None
        )
        kept = pick.score / ref.score if ref and ref.score and pick.score is not None else None
        rows.append(
            [
                pick.device_label,
                f"{pick.model}/{pick.artifact}",
                _fmt(art.bytes if art else None, ".1f", 1e-6),
                _x(size_x),
                _fmt(pick.latency_ms.p50),
                _x(speed_x) + (f" (vs {ref.artifact})" if ref else ""),
                _fmt(pick.score, ".1f", 100, "%"),
                _fmt(kept, ".1f", 100, "%"),
            ]
        )
    return rows


def ship_head(metric: str) -> list[str]:
    return [
        "device",
        "ship",
        "size (MB)",
        "smaller than teacher fp32",
        "p50 ms",
        "faster than teacher",
        metric,
        f"of teacher's {metric}",
    ]


# -- tables ----------------------------------------------------------------------------------


def ladder_rows(m: Manifest) -> list[list[str]]:
    """no model -> teacher -> student -> pruned -> int8: what each step costs and keeps, and each
    metric's margin over the baseline (points)."""
    metric = m.metric
    base = (m.baseline or {}).get("metric")
    rows = []
    if base is not None:
        rows.append(
            [
                f"no model ({m.baseline['name']} baseline)",
                "-",
                "-",
                _fmt(base, ".1f", 100, "%"),
                "-",
                "-",
                "-",
                "-",
                "-",
            ]
        )
    for role, model in m.models.items():
        for name, art in model.artifacts.items():
            value = art.get(f"test_{metric}")
            if value is None:
                on_x86 = [b.score for b in m.benchmarks_of(role, name, "x86") if b.score is not None]
                value = on_x86[0] if on_x86 else None
            rows.append(
                [
                    role,
                    _fmt(model.params, ".2f", 1e-6),
                    _fmt(model.macs, ".0f", 1e-6),
                    _fmt(model.get(metric), ".1f", 100, "%"),
                    name,
                    _fmt(art.bytes, ".1f", 1e-6),
                    _check(art),
                    _fmt(value, ".1f", 100, "%"),
                    _fmt(None if value is None or base is None else value - base, "+.1f", 100),
                ]
            )
    return rows


def _check(art) -> str:
    text = check_cell(art)
    if art.get("parity_max_abs") is not None:
        return f"max |Δ| {text}"
    return f"{text} agree" if text != "-" else text


def ladder_head(metric: str) -> list[str]:
    return [
        "model",
        "params (M)",
        "MACs (M)",
        f"{metric} (PyTorch)",
        "artifact",
        "size (MB)",
        "export check",
        f"{metric} (artifact)",
        "vs baseline (points)",
    ]


def device_head(metric: str) -> list[str]:
    return [
        "model",
        "artifact",
        "runtime",
        "delegate",
        "threads",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        metric,
        "n eval",
        "load ms",
        "first run ms",
        "peak RSS MB",
        "PSS MB",
        "mJ / inference",
        "heat",
    ]


def _energy(b: Benchmark) -> str:
    e = b.energy
    if e is None or e.mj_per_inference is None:
        return "n/a"
    return f"{e.mj_per_inference:.3g}" + ("" if e.valid else " (invalid)")


def _heat(b: Benchmark) -> str:
    if b.thermal is None or b.thermal.throttled is None:
        return "n/a"
    return "HOT" if b.thermal.throttled else "ok"


def device_tables(m: Manifest) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    for b in m.benchmarks:
        lat, mem = b.latency_ms, b.memory or {}
        tables.setdefault(b.device_label, []).append(
            [
                b.model,
                b.artifact,
                f"{b.runtime} {b.runtime_version or ''}".strip(),
                str(b.delegate),
                str(b.threads),
                _fmt(lat.p50),
                _fmt(lat.p90),
                _fmt(lat.p99),
                _fmt(b.score, ".1f", 100, "%"),
                str(b.n_eval),
                _fmt(b.init_ms, ".0f"),
                _fmt(b.first_inference_ms),
                _fmt(b.peak_rss_mb, ".0f"),
                _fmt(mem.get("pss_end_mb", (mem.get("dumpsys_meminfo") or {}).get("total_pss_mb")), ".0f"),
                _energy(b),
                _heat(b),
            ]
        )
    return tables


CONDITIONS_HEAD = [
    "model",
    "artifact",
    "cool-down",
    "max C before -> after",
    "taken hot because",
    "energy",
    "governor",
    "cores",
    "charging",
    "load avg",
    "sensors",
]


def _cool(b: Benchmark) -> str:
    cool = (b.thermal.cool_down or {}) if b.thermal else {}
    if "threshold_c" not in cool:
        return "none asked"
    if cool.get("reached") is None:
        return "n/a (no thermal sensor)"
    return (
        f"{'reached' if cool['reached'] else 'NOT reached'} < {cool['threshold_c']:g} C after {cool['waited_s']:.1f} s"
    )


def conditions_rows(m: Manifest, device: str) -> list[list[str]]:
    """The heat / energy / conditions panel of one device: the facts that decide whether a row can be trusted."""
    rows = []
    for b in m.benchmarks:
        if b.device_label != device or b.conditions is None:
            continue
        t, e, c = b.thermal, b.energy, b.conditions
        before, after = ((t.before or {}).get("max_c"), (t.after or {}).get("max_c")) if t else (None, None)
        temps = (
            f"{before:.1f} -> {after:.1f}"
            if isinstance(before, int | float) and isinstance(after, int | float)
            else "n/a (no thermal sensor)"
        )
        if e is not None and e.mj_per_inference is not None:
            energy = f"{e.mj_per_inference:.3g} mJ, {e.mean_power_mw:.0f} mW, {e.sample_hz_achieved} Hz ({e.source})"
            energy += "" if e.valid else f"; INVALID: {e.reason}"
        else:
            energy = (e.reason if e is not None else None) or "n/a"
        load = c.load_avg if isinstance(c.load_avg, list) else None
        rows.append(
            [
                b.model,
                b.artifact,
                _cool(b),
                temps,
                "; ".join(conditions.hot(b)) or ("-" if t is not None and t.throttled is False else "n/a"),
                energy,
                ",".join(c.governors) if isinstance(c.governors, list) else "n/a",
                ",".join(map(str, c.cores_used)) if isinstance(c.cores_used, list) else "n/a",
                {True: "yes", False: "no", None: "n/a"}[c.charging],
                f"{load[0]:.2f}" if load else "n/a",
                c.sensors or "n/a",
            ]
        )
    return rows


# -- plots -------------------------------------------------------------------------------------


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})  # same data, same bytes
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _log_ms(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def label_offsets(fontsize: float, rows: int = 40) -> list[tuple[float, float]]:
    """Where a point's label may go, in points from the point: right and left of it, one text line
    above, below, then further out, alternating; rows a line apart so stacked labels never touch."""
    line = fontsize * 1.5
    out = []
    for k in range(rows):
        dy = 3 + line * ((k + 1) // 2) * (-1 if k % 2 else 1)
        out += [(4, dy), (-4, dy)]
    return out


def place_labels(ax, points: list[tuple[float, float]], labels: list[str], fontsize: float = 6.5) -> list:
    """Labels that do not overlap: each takes the first offset whose box misses the boxes already placed
    (points on top of each other, e.g. fp32 ONNX and fp32 TFLite of one model, get stacked labels)."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    placed, texts = [], []
    for (x, y), text in sorted(zip(points, labels), key=lambda t: (t[0][0], -t[0][1])):
        for dx, dy in label_offsets(fontsize):
            ha = "left" if dx >= 0 else "right"
            t = ax.annotate(text, (x, y), fontsize=fontsize, xytext=(dx, dy), textcoords="offset points", ha=ha)
            box = t.get_window_extent(renderer).expanded(1.02, 1.1)
            if not any(box.overlaps(b) for b in placed):
                break
            t.remove()
        else:  # 80 places taken around one point: the label goes on the last, overlapping, rather than nowhere
            t = ax.annotate(text, (x, y), fontsize=fontsize, xytext=(dx, dy), textcoords="offset points", ha=ha)
            box = t.get_window_extent(renderer)
        placed.append(box)
        texts.append(t)
    return texts


def plots(runs: Runs) -> dict[str, str]:
    """name -> inline SVG. Metric vs latency per device (Pareto front), size per artifact, latency spread."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "path", "font.size": 9, "svg.hashsalt": "edgepipe"})
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    multi = len(runs) > 1
    metric = runs[0][1].metric
    devices = sorted({b.device_label for _, m in runs for b in m.benchmarks})
    if devices:
        fig, axes = plt.subplots(1, len(devices), figsize=(5.2 * len(devices), 4), squeeze=False)
        for ax, device in zip(axes[0], devices):
            pts, labels, rows = [], [], []
            # metrics on different numbers of examples are not comparable: plot the largest evaluation
            n_max = max((b.n_eval or 0 for _, m in runs for b in m.benchmarks if b.device_label == device), default=0)
            for run_name, m in runs:
                for b in m.benchmarks:
                    if (
                        b.device_label == device
                        and b.score is not None
                        and b.latency_ms.p50 is not None
                        and b.n_eval == n_max
                    ):
                        pts.append((b.latency_ms.p50, b.score * 100))
                        rows.append(b)
                        label = f"{b.model}/{b.artifact}/t{b.threads}"
                        labels.append(f"{run_name}:{label}" if multi else label)
            if not pts:
                continue
            front = pareto(pts)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color="#888")
            hot_pts = [p for p, r in zip(pts, rows) if conditions.hot(r)]
            if hot_pts:
                ax.scatter(
                    [p[0] for p in hot_pts],
                    [p[1] for p in hot_pts],
                    s=70,
                    marker="x",
                    color="#ff7f0e",
                    label="measured hot",
                )
            ax.plot(
                [pts[i][0] for i in front],
                [pts[i][1] for i in front],
                "-o",
                color="#d62728",
                ms=5,
                label="Pareto front",
            )
            _log_ms(ax)
            ax.set_xlabel("p50 latency, ms (log)")
            ax.set_ylabel(f"test {metric}, %")
            mixed = conditions.differences(rows)
            title = f"{device}\n{metric} on {n_max} test examples"
            if mixed or hot_pts:
                title += "\nWARNING: " + "; ".join(
                    (["conditions differ: " + "; ".join(mixed)] if mixed else [])
                    + ([f"{len(hot_pts)} measured hot (x)"] if hot_pts else [])
                )
            ax.set_title(title, fontsize=8 if mixed or hot_pts else 9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
            place_labels(ax, pts, labels)
        out["accuracy_vs_latency"] = _svg(fig)

    sizes = [
        (f"{rn}:{role}/{name}" if multi else f"{role}/{name}", art.bytes / 1e6)
        for rn, m in runs
        for role, mm in m.models.items()
        for name, art in mm.artifacts.items()
        if art.bytes
    ]
    if sizes:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(sizes) + 1))
        ax.barh([s[0] for s in sizes], [s[1] for s in sizes], color="#1f77b4")
        for i, (_, mb) in enumerate(sizes):
            ax.text(mb, i, f" {mb:.1f}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("file size, MB")
        ax.grid(axis="x", alpha=0.3)
        out["size_per_artifact"] = _svg(fig)

    spreads = [
        ((f"{rn}:" if multi else "") + f"{b.model}/{b.artifact} @ {b.device_label} t{b.threads}", b)
        for rn, m in runs
        for b in m.benchmarks
        if b.latency_ms.p50 is not None
    ]
    if spreads:
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(spreads) + 1))
        for i, (_, b) in enumerate(spreads):
            lat = b.latency_ms
            if b.latency_samples_ms:
                ax.boxplot(
                    [b.latency_samples_ms],
                    positions=[i],
                    vert=False,
                    widths=0.6,
                    whis=(1, 99),
                    showfliers=True,
                    flierprops={"markersize": 2},
                    medianprops={"color": "#d62728"},
                )
            else:  # summary only (benchmark_model): min..max line, p50 dot
                ax.plot([lat.min, lat.max], [i, i], color="#888")
                ax.plot([lat.p50 or lat.mean], [i], "o", color="#d62728", ms=4)
        ax.set_yticks(range(len(spreads)), [s[0] for s in spreads], fontsize=7)
        _log_ms(ax)
        ax.set_xlabel("latency per inference, ms (log; box p25-p75, whiskers p1-p99)")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        out["latency_distribution"] = _svg(fig)
    for run_name, m in runs:
        curves = training_curves(m)
        if curves:
            out[f"training_{run_name}" if multi else "training"] = _svg(curves_plot(m, curves, plt))
    for run_name, m in runs:
        if (m.search or {}).get("candidates"):
            out[f"search_{run_name}" if multi else "search"] = _svg(search_plot(m.search, plt))
    return out


def training_curves(m: Manifest) -> dict[str, dict[str, Any]]:
    """role -> its training report with a validation curve (teacher fine-tune, distillation, recovery)."""
    out = {}
    for role, model in m.models.items():
        for key in ("train", "recovery"):
            report = model.get(key)
            if isinstance(report, dict) and report.get("curve"):
                out[role] = report
    return out


def curves_plot(m: Manifest, curves: dict[str, dict[str, Any]], plt) -> Any:
    """Validation metric per evaluation for each training stage; the kept checkpoint circled."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for role, report in curves.items():
        steps, values = zip(*report["curve"])
        (line,) = ax.plot(steps, [v * 100 for v in values], marker=".", label=role)
        ax.plot([report["best_step"]], [report["best_val"] * 100], "o", mfc="none", ms=9, color=line.get_color())
    base = (m.baseline or {}).get("metric")
    if base is not None:
        ax.axhline(base * 100, color="#888", ls="--", lw=1, label=f"{m.baseline['name']} baseline (test)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {m.metric}, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def baseline_summary(m: Manifest) -> str | None:
    """One paragraph: the baseline, the teacher's verdict, and the share of its margin each model kept."""
    b = m.baseline
    if not b:
        return None
    metric, t = m.metric, b.get("teacher", {})
    if "majority" in b:  # one label per text
        text = (
            f"Without a model: always '{_label(m, b.get('majority_label_id'))}' (majority) scores {b['majority'] * 100:.1f}% test {metric}, "
            f"guessing at the training label frequencies (stratified) {b['stratified'] * 100:.1f}%."
        )
    else:  # the task's own baseline (multi-label: the same k most frequent labels for every text)
        text = f"Without a model: {b['name']} scores {b['metric'] * 100:.1f}% test {metric}."
    if t:
        p = f", binomial p = {t['p_value']:.2g}" if "p_value" in t else ""
        verdict = "clearly better" if t.get("beats") else "NOT clearly better"
        text += f" The teacher is {t['margin'] * 100:+.1f} points over it ({verdict}{p})."
    kept = [
        f"{role} {model.baseline_margin_kept * 100:.0f}%"
        for role, model in m.models.items()
        if model.baseline_margin_kept is not None
    ]
    if kept:
        text += " Share of the teacher's margin kept: " + ", ".join(kept) + "."
    return text


def _label(m: Manifest, label_id: int | None) -> str:
    labels = m.dataset.get("labels") or []
    return labels[label_id] if label_id is not None and label_id < len(labels) else str(label_id)


SEARCH_HEAD = [
    "plan",
    "format",
    "predicted ms",
    "measured ms",
    "size (MB)",
    "peak RSS MB",
    "val metric (estimate)",
    "Pareto",
    "budget",
]
LATMODEL_HEAD = ["format", "points measured", "held-out points: median / max error", "candidates: median / max error"]


def search_rows(search: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    chosen = search.get("chosen") or {}
    rows = []
    for c in search.get("candidates", []):
        mark = (
            "chosen"
            if (c["plan"], c["format"]) == (chosen.get("plan"), chosen.get("format"))
            else ("; ".join(c["misses"].values()) or "meets")
        )
        rows.append(
            [
                c["plan"],
                c["format"],
                _fmt(c["predicted_latency_ms"]),
                _fmt(c["latency_ms"]),
                _fmt(c["size_mb"]),
                _fmt(c.get("peak_rss_mb"), ".0f"),
                _fmt(c["accuracy"], ".1f", 100, "%"),
                "yes" if c.get("pareto") else "",
                mark,
            ]
        )

    def err(e: dict[str, Any] | None) -> str:
        return "-" if not e or not e.get("n") else f"{e['median_abs_pct']:.1f}% / {e['max_abs_pct']:.1f}% (n={e['n']})"

    models = [
        [fmt, str(m["points"]), err(m.get("holdout_error")), err(m.get("candidate_error"))]
        for fmt, m in search.get("latency_models", {}).items()
    ]
    return rows, models


def search_summary(search: dict[str, Any]) -> str:
    b = search["budget"]
    metric = search.get("metric", "accuracy")
    budget = ", ".join(
        t
        for t in (
            b.get("max_latency_ms") and f"p50 ≤ {b['max_latency_ms']:g} ms",
            b.get("max_size_mb") and f"size ≤ {b['max_size_mb']:g} MB",
            b.get("max_memory_mb") and f"peak RSS ≤ {b['max_memory_mb']:g} MB",
            b.get("min_accuracy") and f"val {metric} ≥ {b['min_accuracy'] * 100:g}%",
        )
        if t
    )
    text = f"Budget on {search['device']}: {budget}. {len(search.get('candidates', []))} plans measured after a short distillation "
    text += f"({search.get('seconds', 0):.0f} s, stopped: {search.get('stopped_by')}). "
    c, final = search.get("chosen"), search.get("final")
    if c is None:
        return text + "No plan met the budget."
    text += f"Chosen: {c['plan']} as {c['format']}. "
    if final:
        verdict = "meets the budget" if final["meets_budget"] else "misses it: " + "; ".join(final["misses"].values())
        text += f"Fully trained: {final['latency_ms']:.2f} ms, {final['size_mb']:.2f} MB, test {metric} {_fmt(final.get('test_accuracy'), '.1f', 100, '%')}; {verdict}."
    return text


def search_plot(search: dict[str, Any], plt) -> Any:
    """Left: estimated metric vs measured latency with the budget lines. Right: the latency model, predicted vs measured."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 4))
    cands = search.get("candidates", [])
    b = search["budget"]
    metric = search.get("metric", "accuracy")
    pts = [(c["latency_ms"], c["accuracy"] * 100) for c in cands]
    for fmt, marker in zip(sorted({c["format"] for c in cands}), "os^v"):
        sel = [p for p, c in zip(pts, cands) if c["format"] == fmt]
        ax.scatter([p[0] for p in sel], [p[1] for p in sel], s=24, marker=marker, color="#888", label=fmt)
    front = pareto(pts)  # 2-D here (the table's Pareto column also counts size)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="#d62728", lw=1.2, label="Pareto front")
    chosen = search.get("chosen")
    if chosen:
        ax.plot([chosen["latency_ms"]], [chosen["accuracy"] * 100], "*", color="#2ca02c", ms=14, label="chosen")
    if b.get("max_latency_ms"):
        ax.axvline(b["max_latency_ms"], color="#1f77b4", ls="--", lw=1, label="latency budget")
    if b.get("min_accuracy"):
        ax.axhline(b["min_accuracy"] * 100, color="#9467bd", ls="--", lw=1, label=f"{metric} floor")
    ax.set_xlabel(f"measured p50 latency on {search['device']}, ms")
    ax.set_ylabel(f"validation {metric} (short distillation), %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    place_labels(ax, pts, [c["plan"].replace("_vocab", "").replace("_fullvocab", " fv") for c in cands], fontsize=6)
    for fmt, pts_ in (search.get("latency_points") or {}).items():
        ax2.scatter(
            [p["p50_ms"] for p in pts_],
            [p["predicted_ms"] for p in pts_],
            s=14,
            alpha=0.6,
            label=f"{fmt}: random shapes (fit)",
        )
    for fmt in sorted({c["format"] for c in cands}):
        sel = [c for c in cands if c["format"] == fmt]
        ax2.scatter(
            [c["latency_ms"] for c in sel],
            [c["predicted_latency_ms"] for c in sel],
            s=30,
            marker="x",
            label=f"{fmt}: candidates (held out)",
        )
    lim = [v for p in (search.get("latency_points") or {}).values() for v in (x["p50_ms"] for x in p)] + [
        c["latency_ms"] for c in cands
    ]
    if lim:
        lo, hi = min(lim) * 0.9, max(lim) * 1.1
        ax2.plot([lo, hi], [lo, hi], color="#444", lw=0.8)
        ax2.fill_between(
            [lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="#ccc", alpha=0.35, label="±15%"
        )
    ax2.set_xlabel("measured p50, ms")
    ax2.set_ylabel("latency model, ms")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=6.5, loc="upper left")
    return fig


def comparison_rows(runs: Runs) -> list[list[str]]:
    rows = []
    for name, m in runs:
        for role in [r for r in ROLES if r in m.models]:
            mm = m.models[role]
            for art_name, art in mm.artifacts.items():
                x86 = [b for b in m.benchmarks_of(role, art_name, "x86") if b.threads == 1]
                rows.append(
                    [
                        name,
                        role,
                        art_name,
                        _fmt(art.bytes, ".1f", 1e-6),
                        _fmt(x86[0].score if x86 else mm.get(m.metric), ".1f", 100, "%"),
                        _fmt(x86[0].latency_ms.p50 if x86 else None),
                    ]
                )
    return rows


def compare_head(metric: str) -> list[str]:
    return ["run", "model", "artifact", "size (MB)", f"{metric} (x86)", "p50 ms (x86, 1 thread)"]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12.5px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}th{background:#f4f4f4}.note{color:#555;font-size:12.5px}
.warn{background:#fff4e5;border:1px solid #f0b35c;padding:6px 10px}.ship{background:#eef7ee;border:1px solid #8c8;padding:2px 12px 8px}
figure{margin:8px 0 20px}figure svg{max-width:100%;height:auto}"""


GOALS_FILE = "goals.json"  # what `python -m bench` measured on this run (bench/goals.py)
GOALS_HEAD = ["goal", "measure", "threads", "figure", "target", "status"]


def load_goals(run_dir: Path) -> dict[str, Any] | None:
    """The bench's results kept in the run directory; None when it was never benchmarked (or the file
    is not the bench's: the report is still written without it)."""
    try:
        doc = json.loads((Path(run_dir) / GOALS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("table"), list) else None


def goals_section(doc: _Doc, goals: dict[str, Any], svgs: dict[str, str], name: str) -> None:
    m = goals.get("machine", {})
    doc.heading(3, "Goals (python -m bench)")
    doc.para(
        f"Measured {goals.get('finished', '')} on {m.get('model', '?')} ({m.get('logical_cpus', '?')} CPUs): "
        f"sequence length {goals.get('seq_len')}, batch 1, every ratio from alternating rounds in one process "
        f"({goals.get('rounds')} rounds x {goals.get('runs_per_round')} runs); {goals.get('mode', '')}.",
        "note",
    )
    doc.table(GOALS_HEAD, [[str(c) for c in row] for row in goals["table"]])
    results = goals.get("results", {})
    sc = results.get("scaling")
    if sc:
        doc.heading(3, "How latency grows (pruned int8 ONNX, 1 thread)")
        rows = [[f"{r['seq_len']} tokens, batch 1", f"{r['p50_ms']:.3f}", "-"] for r in sc["by_seq_len"]]
        rows += [
            [f"batch {r['batch']}, 64 tokens", f"{r['p50_ms']:.3f}", f"{r['per_sequence_ms']:.3f}"]
            for r in sc["by_batch"]
        ]
        rows += [
            [f"batch 32, 64 tokens, {t['threads']} thread(s)", "-", f"{1e3 / t['sequences_per_s']:.3f}"]
            for t in sc["throughput"]
        ]
        doc.table(["shape", "p50 ms", "ms per sequence"], rows)
    sizes = (results.get("wall_by_size") or {}).get("rows")
    if sc:
        svgs[f"scaling_{name}"] = scaling_svg(sc, wall_by_size=sizes)
    if sizes:
        doc.heading(3, "compress-and-export wall time by training-set size (cold cache)")
        doc.table(
            ["training examples", "wall s", "peak RSS MB", "test metric (pruned int8 ONNX)"],
            [
                [
                    str(r["train_examples"]),
                    _fmt(r.get("wall_s"), ".0f"),
                    _fmt(r.get("max_rss_mb"), ".0f"),
                    _fmt(r.get("metric"), ".4f"),
                ]
                for r in sizes
            ],
        )


def scaling_svg(sc: dict[str, Any], title: str | None = None, wall_by_size: list[dict] | None = None) -> str:
    """p50 against sequence length and against batch (log-log), and, where `python -m bench --wall-sizes`
    measured it, a cold run's wall time against the training-set size: the run's report and
    bench/scaling.svg."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "path", "font.size": 9, "svg.hashsalt": "edgepipe"})
    import matplotlib.pyplot as plt

    sizes = [r for r in wall_by_size or () if not r.get("rc") and r.get("wall_s")]  # failed runs: table only
    fig, axes = plt.subplots(1, 3 if sizes else 2, figsize=(13.5 if sizes else 9, 3.4))
    a, b = axes[:2]
    if sizes:
        c = axes[2]
        c.plot([r["train_examples"] for r in sizes], [r["wall_s"] for r in sizes], "o-")
        c.set(xlabel="training examples (cold cache)", ylabel="compress-and-export wall s")
        c.set_ylim(bottom=0)
    a.plot([r["seq_len"] for r in sc["by_seq_len"]], [r["p50_ms"] for r in sc["by_seq_len"]], "o-")
    a.set(xscale="log", yscale="log", xlabel="sequence length (tokens), batch 1", ylabel="p50 ms, 1 thread")
    b.plot([r["batch"] for r in sc["by_batch"]], [r["p50_ms"] for r in sc["by_batch"]], "o-", label="per batch")
    b.plot(
        [r["batch"] for r in sc["by_batch"]],
        [r["per_sequence_ms"] for r in sc["by_batch"]],
        "s--",
        label="per sequence",
    )
    b.set(xscale="log", yscale="log", xlabel="batch (64 tokens)", ylabel="p50 ms, 1 thread")
    b.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    return _svg(fig)


class _Doc:
    """Markdown and HTML written side by side."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, level: int, text: str) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str, cls: str = "") -> None:
        self.md += [f"> {text}" if cls == "warn" else text, ""]
        self.html.append(f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>")

    def table(self, head: list[str], rows: list[list[str]]) -> None:
        self.md += [_md_table(head, rows), ""]
        self.html.append(_html_table(head, rows))


def render(
    runs: Runs | list[tuple[str, dict[str, Any]]], goals: dict[str, dict[str, Any]] | None = None
) -> tuple[str, str, dict[str, str]]:
    """(markdown, html, svgs) for one run or several side by side; `goals`: the bench's results by run name."""
    goals = goals or {}
    runs = [(name, m if isinstance(m, Manifest) else Manifest.parse(m)) for name, m in runs]
    svgs = plots(runs)
    title = "edgepipe report: " + ", ".join(name for name, _ in runs)
    doc = _Doc()
    doc.heading(1, title)
    emulated = sorted({b.device_label for _, m in runs for b in m.benchmarks if b.emulated})
    if emulated:
        doc.para(
            "Emulated devices ("
            + ", ".join(emulated)
            + "): their latencies are plumbing checks, not performance numbers; "
            "their metrics are exact.",
            "warn",
        )
    for name, m in runs:
        rows = ship_rows(m)
        if rows:
            start = len(doc.html)
            doc.heading(2, f"What to ship: {name}" if len(runs) > 1 else "What to ship")
            doc.para(
                f"Per device, the {m.shipped} model's bundled artifact (the budget search's choice on its device, else the fastest), "
                "against the teacher measured on the same device, threads and runtime (fp32 TFLite for TFLite, else fp32 ONNX).",
                "note",
            )
            doc.table(ship_head(m.metric), rows)
            doc.html[start:] = ['<section class="ship">' + "".join(doc.html[start:]) + "</section>"]
    if len(runs) > 1:
        doc.heading(2, "Runs side by side")
        doc.table(compare_head(runs[0][1].metric), comparison_rows(runs))
    for name, m in runs:
        env = m.environment
        doc.heading(2, name)
        doc.para(
            f"edgepipe {m.version}, seed {m.seed}, torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, {env.get('machine')}; "
            f"data: {m.name}; task: {(m.task or {}).get('name', 'sequence_classification')}",
            "note",
        )
        doc.heading(3, "Stage ladder")
        summary = baseline_summary(m)
        if summary:
            doc.para(summary)
        doc.table(ladder_head(m.metric), ladder_rows(m))
        for device, rows in device_tables(m).items():
            doc.heading(3, f"Latency and {m.metric} on {device}")
            doc.table(device_head(m.metric), rows)
            panel = conditions_rows(m, device)
            if panel:
                doc.heading(3, f"Heat, energy and conditions on {device}")
                on_device = [b for b in m.benchmarks if b.device_label == device]
                mixed, hot_rows = conditions.differences(on_device), [b for b in on_device if conditions.hot(b)]
                if mixed:
                    doc.para(
                        "Measured under differing conditions (" + "; ".join(mixed) + "): compare these rows with care.",
                        "warn",
                    )
                if hot_rows:
                    doc.para(
                        f"{len(hot_rows)} row(s) measured hot (throttled, warmed beyond the margin or a cool-down that did not finish): "
                        "their latencies may be slower than the device's cool figure.",
                        "warn",
                    )
                doc.table(CONDITIONS_HEAD, panel)
        if name in goals:
            goals_section(doc, goals[name], svgs, name)
        if m.search:
            cand_rows, model_rows = search_rows(m.search)
            doc.heading(3, "Budget search")
            doc.para(search_summary(m.search))
            doc.table(SEARCH_HEAD, cand_rows)
            doc.para("Latency model (per format, on this device):", "note")
            doc.table(LATMODEL_HEAD, model_rows)
    metric = runs[0][1].metric
    captions = {
        "accuracy_vs_latency": f"Test {metric} vs p50 latency per device; the red line is the Pareto front (nothing else is both faster and better); "
        "x: measured hot; a panel's title warns when its points were measured under differing conditions.",
        "size_per_artifact": "File size per artifact.",
        "latency_distribution": "Latency distribution per artifact and device.",
    }
    for key in svgs:
        if key.startswith("scaling"):
            captions[key] = (
                "p50 of the pruned int8 ONNX against sequence length (batch 1) and batch (64 tokens), 1 thread: "
                "python -m bench, on this run's model."
            )
        if key.startswith("training"):
            captions[key] = (
                f"Validation {metric} during training (teacher fine-tune, distillation, pruning recovery); "
                "the circled point is the checkpoint kept; dashed: the baseline without a model."
            )
        if key.startswith("search"):
            captions[key] = (
                f"Budget search: estimated {metric} vs measured latency of the plans tried, with the budget lines and their Pareto front; "
                "right, the device latency model against measurements (candidates were never in its fit)."
            )
    doc.heading(2, "Plots")
    for key, svg in svgs.items():
        doc.md += [f"![{captions[key]}](report_files/{key}.svg)", "", captions[key], ""]
        doc.html.append(
            f'<figure id="{key}">{svg}<figcaption class="note">{html.escape(captions[key])}</figcaption></figure>'
        )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>" + "\n".join(doc.html) + "</body></html>"
    )
    return "\n".join(doc.md) + "\n", page, svgs


def write_report(out_dir: Path, runs: Runs, goals: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    md, page, svgs = render(runs, goals)
    paths = [out_dir / "report.md", out_dir / "report.html"]
    write_bytes_atomic(paths[0], md.encode())
    write_bytes_atomic(paths[1], page.encode())
    for key, svg in svgs.items():
        write_bytes_atomic(out_dir / "report_files" / f"{key}.svg", svg.encode())
    return paths


def load_run(run_dir: Path) -> tuple[str, Manifest]:
    return Path(run_dir).resolve().name, Manifest.load(run_dir)
