"""The report people look at: `DIR/report.html` (one self-contained file, opens offline) and
`DIR/report.md`, rebuilt from manifests only, so `edgepipe report` can redo and compare runs.

Plots are matplotlib SVG with text drawn as paths, inlined into the HTML: no script, no
font, no CDN, nothing fetched. Emulated devices are labelled wherever a latency appears.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from edgepipe.rundir import write_bytes_atomic
from edgepipe.summary import device_label

ORDER = ("teacher", "student", "pruned")


def _fmt(v: Any, spec: str = ".2f", scale: float = 1.0, suffix: str = "") -> str:
    return "-" if v is None else f"{v * scale:{spec}}{suffix}"


def ladder_rows(manifest: dict[str, Any]) -> list[list[str]]:
    """teacher -> student -> pruned -> int8: what each step costs and keeps."""
    rows = []
    for role, m in manifest["models"].items():
        for name, art in m.get("artifacts", {}).items():
            if "parity_max_abs" in art:
                check = f"max |Δlogit| {art['parity_max_abs']:.1e}"
            elif "argmax_agreement" in art:
                check = f"{art['argmax_agreement'] * 100:.1f}% agree"
            else:
                check = "-"
            acc = art.get("test_accuracy")
            if acc is None:
                accs = [b["accuracy"] for b in manifest["benchmarks"] if b["model"] == role and b["artifact"] == name and b.get("accuracy") is not None and b["device"] == "x86"]
                acc = accs[0] if accs else None
            rows.append([role, _fmt(m.get("params"), ".2f", 1e-6), _fmt(m.get("macs"), ".0f", 1e-6), _fmt(m.get("accuracy"), ".1f", 100, "%"),
                         name, _fmt(art.get("bytes"), ".1f", 1e-6), check, _fmt(acc, ".1f", 100, "%")])  # fmt: skip
    return rows


LADDER_HEAD = ["model", "params (M)", "MACs (M)", "accuracy (PyTorch)", "artifact", "size (MB)", "export check", "accuracy (artifact)"]
DEVICE_HEAD = ["model", "artifact", "runtime", "delegate", "threads", "p50 ms", "p90 ms", "p99 ms", "accuracy", "n eval"]


def device_tables(manifest: dict[str, Any]) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    for b in manifest["benchmarks"]:
        lat = b["latency_ms"]
        tables.setdefault(device_label(b), []).append([
            b["model"], b["artifact"], f"{b['runtime']} {b.get('runtime_version') or ''}".strip(), str(b.get("delegate")), str(b["threads"]),
            _fmt(lat.get("p50")), _fmt(lat.get("p90")), _fmt(lat.get("p99")), _fmt(b.get("accuracy"), ".1f", 100, "%"), str(b.get("n_eval")),
        ])  # fmt: skip
    return tables


def undominated(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of points no other point beats: no worse on every objective (all minimised) and better on one."""

    def beats(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [i for i, p in enumerate(points) if not any(beats(q, p) for j, q in enumerate(points) if j != i)]


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of (latency, accuracy) points on the front, by latency: nothing else is both faster and more accurate."""
    return sorted(undominated([(lat, -acc) for lat, acc in points]), key=lambda i: points[i][0])


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _log_ms(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def plots(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """name -> inline SVG. Accuracy vs latency per device (Pareto front), size per artifact, latency spread."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.fonttype": "path", "font.size": 9, "svg.hashsalt": "edgepipe"})
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    multi = len(runs) > 1
    devices = sorted({device_label(b) for _, m in runs for b in m["benchmarks"]})
    if devices:
        fig, axes = plt.subplots(1, len(devices), figsize=(5.2 * len(devices), 4), squeeze=False)
        for ax, device in zip(axes[0], devices):
            pts, labels = [], []
            # accuracies on different numbers of examples are not comparable: plot the largest evaluation
            n_max = max((b.get("n_eval") or 0 for _, m in runs for b in m["benchmarks"] if device_label(b) == device), default=0)
            for run_name, m in runs:
                for b in m["benchmarks"]:
                    if device_label(b) == device and b.get("accuracy") is not None and b["latency_ms"].get("p50") is not None and b.get("n_eval") == n_max:
                        pts.append((b["latency_ms"]["p50"], b["accuracy"] * 100))
                        labels.append(f"{run_name}:{b['model']}/{b['artifact']}/t{b['threads']}" if multi else f"{b['model']}/{b['artifact']}/t{b['threads']}")
            if not pts:
                continue
            front = pareto(pts)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, color="#888")
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-o", color="#d62728", ms=5, label="Pareto front")
            for (x, y), text in zip(pts, labels):
                ax.annotate(text, (x, y), fontsize=6.5, xytext=(3, 3), textcoords="offset points")
            _log_ms(ax)
            ax.set_xlabel("p50 latency, ms (log)")
            ax.set_ylabel("test accuracy, %")
            ax.set_title(f"{device}\naccuracy on {n_max} test examples", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        out["accuracy_vs_latency"] = _svg(fig)

    sizes = [(f"{rn}:{role}/{name}" if multi else f"{role}/{name}", art["bytes"] / 1e6)
             for rn, m in runs for role, mm in m["models"].items() for name, art in mm.get("artifacts", {}).items() if art.get("bytes")]  # fmt: skip
    if sizes:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(sizes) + 1))
        ax.barh([s[0] for s in sizes], [s[1] for s in sizes], color="#1f77b4")
        for i, (_, mb) in enumerate(sizes):
            ax.text(mb, i, f" {mb:.1f}", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("file size, MB")
        ax.grid(axis="x", alpha=0.3)
        out["size_per_artifact"] = _svg(fig)

    spreads = [(f"{rn}:{b['model']}/{b['artifact']} @ {device_label(b)} t{b['threads']}" if multi else f"{b['model']}/{b['artifact']} @ {device_label(b)} t{b['threads']}", b)
               for rn, m in runs for b in m["benchmarks"] if b["latency_ms"].get("p50") is not None]  # fmt: skip
    if spreads:
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(spreads) + 1))
        samples = [b.get("latency_samples_ms") for _, b in spreads]
        for i, (_, b) in enumerate(spreads):
            lat = b["latency_ms"]
            if samples[i]:
                ax.boxplot([samples[i]], positions=[i], vert=False, widths=0.6, whis=(1, 99), showfliers=True,
                           flierprops={"markersize": 2}, medianprops={"color": "#d62728"})  # fmt: skip
            else:  # summary only (benchmark_model): min..max line, p50 dot
                ax.plot([lat["min"], lat["max"]], [i, i], color="#888")
                ax.plot([lat["p50"] or lat["mean"]], [i], "o", color="#d62728", ms=4)
        ax.set_yticks(range(len(spreads)), [s[0] for s in spreads], fontsize=7)
        _log_ms(ax)
        ax.set_xlabel("latency per inference, ms (log; box p25-p75, whiskers p1-p99)")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        out["latency_distribution"] = _svg(fig)
    for run_name, m in runs:
        if (m.get("search") or {}).get("candidates"):
            out[f"search_{run_name}" if multi else "search"] = _svg(search_plot(m["search"], plt))
    return out


SEARCH_HEAD = ["plan", "format", "predicted ms", "measured ms", "size (MB)", "val accuracy (estimate)", "Pareto", "budget"]
LATMODEL_HEAD = ["format", "points measured", "held-out points: median / max error", "candidates: median / max error"]


def search_rows(search: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    chosen = search.get("chosen") or {}
    rows = []
    for c in search.get("candidates", []):
        mark = "chosen" if (c["plan"], c["format"]) == (chosen.get("plan"), chosen.get("format")) else ("; ".join(c["misses"].values()) or "meets")
        rows.append([c["plan"], c["format"], _fmt(c["predicted_latency_ms"]), _fmt(c["latency_ms"]), _fmt(c["size_mb"]),
                     _fmt(c["accuracy"], ".1f", 100, "%"), "yes" if c.get("pareto") else "", mark])  # fmt: skip

    def err(e: dict[str, Any] | None) -> str:
        return "-" if not e or not e.get("n") else f"{e['median_abs_pct']:.1f}% / {e['max_abs_pct']:.1f}% (n={e['n']})"

    models = [[fmt, str(m["points"]), err(m.get("holdout_error")), err(m.get("candidate_error"))] for fmt, m in search.get("latency_models", {}).items()]
    return rows, models


def search_summary(search: dict[str, Any]) -> str:
    b = search["budget"]
    budget = ", ".join(t for t in (b.get("max_latency_ms") and f"p50 ≤ {b['max_latency_ms']:g} ms", b.get("max_size_mb") and f"size ≤ {b['max_size_mb']:g} MB",
                                   b.get("min_accuracy") and f"val accuracy ≥ {b['min_accuracy'] * 100:g}%") if t)  # fmt: skip
    text = f"Budget on {search['device']}: {budget}. {len(search.get('candidates', []))} plans measured after a short distillation "
    text += f"({search.get('seconds', 0):.0f} s, stopped: {search.get('stopped_by')}). "
    c, final = search.get("chosen"), search.get("final")
    if c is None:
        return text + "No plan met the budget."
    text += f"Chosen: {c['plan']} as {c['format']}. "
    if final:
        verdict = "meets the budget" if final["meets_budget"] else "misses it: " + "; ".join(final["misses"].values())
        text += f"Fully trained: {final['latency_ms']:.2f} ms, {final['size_mb']:.2f} MB, test accuracy {_fmt(final.get('test_accuracy'), '.1f', 100, '%')}; {verdict}."
    return text


def search_plot(search: dict[str, Any], plt) -> Any:
    """Left: estimated accuracy vs measured latency with the budget lines. Right: the latency model, predicted vs measured."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10.5, 4))
    cands = search.get("candidates", [])
    b = search["budget"]
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
        ax.axhline(b["min_accuracy"] * 100, color="#9467bd", ls="--", lw=1, label="accuracy floor")
    for (x, y), c in zip(pts, cands):
        ax.annotate(c["plan"].replace("_vocab", "").replace("_fullvocab", " fv"), (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"measured p50 latency on {search['device']}, ms")
    ax.set_ylabel("validation accuracy (short distillation), %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    for fmt, pts_ in (search.get("latency_points") or {}).items():
        ax2.scatter([p["p50_ms"] for p in pts_], [p["predicted_ms"] for p in pts_], s=14, alpha=0.6, label=f"{fmt}: random shapes (fit)")
    for fmt in sorted({c["format"] for c in cands}):
        sel = [c for c in cands if c["format"] == fmt]
        ax2.scatter([c["latency_ms"] for c in sel], [c["predicted_latency_ms"] for c in sel], s=30, marker="x", label=f"{fmt}: candidates (held out)")
    lim = [v for p in (search.get("latency_points") or {}).values() for v in (x["p50_ms"] for x in p)] + [c["latency_ms"] for c in cands]
    if lim:
        lo, hi = min(lim) * 0.9, max(lim) * 1.1
        ax2.plot([lo, hi], [lo, hi], color="#444", lw=0.8)
        ax2.fill_between([lo, hi], [lo * 0.85, hi * 0.85], [lo * 1.15, hi * 1.15], color="#ccc", alpha=0.35, label="±15%")
    ax2.set_xlabel("measured p50, ms")
    ax2.set_ylabel("latency model, ms")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=6.5, loc="upper left")
    return fig


def comparison_rows(runs: list[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    rows = []
    for name, m in runs:
        for role in [r for r in ORDER if r in m["models"]]:
            mm = m["models"][role]
            for art_name, art in mm.get("artifacts", {}).items():
                x86 = [b for b in m["benchmarks"] if b["model"] == role and b["artifact"] == art_name and b["device"] == "x86" and b["threads"] == 1]
                rows.append([name, role, art_name, _fmt(art.get("bytes"), ".1f", 1e-6), _fmt(x86[0]["accuracy"] if x86 else mm.get("accuracy"), ".1f", 100, "%"),
                             _fmt(x86[0]["latency_ms"]["p50"] if x86 else None)])  # fmt: skip
    return rows


COMPARE_HEAD = ["run", "model", "artifact", "size (MB)", "accuracy (x86)", "p50 ms (x86, 1 thread)"]


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
.warn{background:#fff4e5;border:1px solid #f0b35c;padding:6px 10px}figure{margin:8px 0 20px}figure svg{max-width:100%;height:auto}"""


def render(runs: list[tuple[str, dict[str, Any]]]) -> tuple[str, str, dict[str, str]]:
    """(markdown, html, svgs) for one run or several side by side."""
    svgs = plots(runs)
    title = "edgepipe report: " + ", ".join(name for name, _ in runs)
    md: list[str] = [f"# {title}", ""]
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    emulated = sorted({device_label(b) for _, m in runs for b in m["benchmarks"] if (b.get("device_info") or {}).get("emulated")})
    if emulated:
        text = "Emulated devices (" + ", ".join(emulated) + "): their latencies are plumbing checks, not performance numbers; their accuracies are exact."
        md += [f"> {text}", ""]
        body.append(f'<p class="warn">{html.escape(text)}</p>')
    if len(runs) > 1:
        md += ["## Runs side by side", "", _md_table(COMPARE_HEAD, comparison_rows(runs)), ""]
        body += ["<h2>Runs side by side</h2>", _html_table(COMPARE_HEAD, comparison_rows(runs))]
    for name, m in runs:
        env = m.get("environment", {})
        facts = f"edgepipe {m.get('version')}, seed {m.get('seed')}, torch {env.get('torch')}, onnxruntime {env.get('onnxruntime')}, {env.get('machine')}; data: {m.get('dataset', {}).get('name', '?')}"
        md += [f"## {name}", "", facts, "", "### Stage ladder", "", _md_table(LADDER_HEAD, ladder_rows(m)), ""]
        body += [f"<h2>{html.escape(name)}</h2>", f'<p class="note">{html.escape(facts)}</p>', "<h3>Stage ladder</h3>", _html_table(LADDER_HEAD, ladder_rows(m))]
        for device, rows in device_tables(m).items():
            md += [f"### Latency and accuracy on {device}", "", _md_table(DEVICE_HEAD, rows), ""]
            body += [f"<h3>Latency and accuracy on {html.escape(device)}</h3>", _html_table(DEVICE_HEAD, rows)]
        if m.get("search"):
            summary = search_summary(m["search"])
            cand_rows, model_rows = search_rows(m["search"])
            md += ["### Budget search", "", summary, "", _md_table(SEARCH_HEAD, cand_rows), "", "Latency model (per format, on this device):", "",
                   _md_table(LATMODEL_HEAD, model_rows), ""]  # fmt: skip
            body += ["<h3>Budget search</h3>", f"<p>{html.escape(summary)}</p>", _html_table(SEARCH_HEAD, cand_rows),
                     '<p class="note">Latency model (per format, on this device):</p>', _html_table(LATMODEL_HEAD, model_rows)]  # fmt: skip
    captions = {
        "accuracy_vs_latency": "Accuracy vs p50 latency per device; the red line is the Pareto front (nothing else is both faster and more accurate).",
        "size_per_artifact": "File size per artifact.",
        "latency_distribution": "Latency distribution per artifact and device.",
    }
    for key in svgs:
        if key.startswith("search"):
            captions[key] = ("Budget search: estimated accuracy vs measured latency of the plans tried, with the budget lines and their Pareto front; "
                             "right, the device latency model against measurements (candidates were never in its fit).")  # fmt: skip
    md += ["## Plots", ""]
    body.append("<h2>Plots</h2>")
    for key, svg in svgs.items():
        md += [f"![{captions[key]}](report_files/{key}.svg)", "", captions[key], ""]
        body.append(f'<figure id="{key}">{svg}<figcaption class="note">{html.escape(captions[key])}</figcaption></figure>')
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>"
    )
    return "\n".join(md) + "\n", page, svgs


def write_report(out_dir: Path, runs: list[tuple[str, dict[str, Any]]]) -> list[Path]:
    md, page, svgs = render(runs)
    paths = [out_dir / "report.md", out_dir / "report.html"]
    write_bytes_atomic(paths[0], md.encode())
    write_bytes_atomic(paths[1], page.encode())
    for key, svg in svgs.items():
        write_bytes_atomic(out_dir / "report_files" / f"{key}.svg", svg.encode())
    return paths


def load_run(run_dir: Path) -> tuple[str, dict[str, Any]]:
    from edgepipe.errors import RunDirError

    path = Path(run_dir) / "manifest.json"
    try:
        return Path(run_dir).resolve().name, json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} has no manifest.json; pass a directory written by compress-and-export") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{path} is corrupt; rerun compress-and-export --out {run_dir} to rebuild it") from None
