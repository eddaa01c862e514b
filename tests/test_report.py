"""report.html / report.md: rendered by a real headless Chromium, offline, nothing fetched."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest

from conftest import BIN
from edgepipe.app.report import render
from edgepipe.pareto import pareto

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--dns-prefetch-disable",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
]


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 80.0), (2.0, 82.0), (1.5, 79.0), (3.0, 82.0), (0.5, 70.0), (2.0, 81.0)]
    assert pareto(pts) == [4, 0, 1]


class _Trap(http.server.BaseHTTPRequestHandler):
    """A proxy that answers nothing and remembers every request the browser tried to make."""

    seen: list[str] = []

    def _record(self):
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(403)
        self.end_headers()

    do_GET = do_POST = do_HEAD = do_CONNECT = _record

    def log_message(self, *args):
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium_and_requests_nothing(smoke_run, tmp_path):
    out, _, _ = smoke_run
    page = out / "report.html"
    text = page.read_text()
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text), (
        "the report must not reference the network"
    )
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trap)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    flags = [*CHROME_FLAGS, f"--proxy-server=http://127.0.0.1:{proxy.server_port}", "--proxy-bypass-list=<-loopback>"]

    def visit(url: str, *extra: str) -> tuple[str, set[str]]:
        _Trap.seen = []
        profile = f"--user-data-dir={tmp_path / 'profile'}"
        dom = subprocess.run(
            [CHROMIUM, *flags, profile, *extra, url], capture_output=True, text=True, timeout=120
        ).stdout
        return dom, {r.split("?")[0] for r in _Trap.seen}

    try:
        # Chromium itself still dials a couple of Google hosts at start-up (sign-in, search
        # preconnect) whatever the flags; an empty page shows which, so only the page's own count
        _, browser_own = visit("about:blank", "--dump-dom")
        dom, seen = visit(page.as_uri(), "--dump-dom")
        shot = tmp_path / "report.png"
        _, seen_shot = visit(page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
    finally:
        proxy.shutdown()
    assert (seen | seen_shot) <= browser_own, f"the report made requests: {(seen | seen_shot) - browser_own}"
    assert not any(r.startswith("GET ") for r in seen | seen_shot)
    for fig in ("accuracy_vs_latency", "size_per_artifact", "latency_distribution"):
        assert re.search(rf'<figure id="{fig}"><svg', dom), fig
    assert dom.count("<table") >= 2 and "Stage ladder" in dom and "Pareto front" in dom
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    hist = img.histogram()
    assert sum(hist[:200]) > 0.02 * img.size[0] * img.size[1]  # text, bars and lines, not a blank page


def test_manifest_ladder_and_device_tables_in_markdown(smoke_run):
    out, _, _ = smoke_run
    md = (out / "report.md").read_text()
    m = json.loads((out / "manifest.json").read_text())
    assert "### Stage ladder" in md and "### Latency and accuracy on x86" in md
    for role, model in m["models"].items():
        for name in model["artifacts"]:
            assert f"| {role} |" in md and f"| {name} |" in md
    for fig in ("accuracy_vs_latency", "size_per_artifact", "latency_distribution"):
        assert (out / "report_files" / f"{fig}.svg").is_file()


def test_emulated_devices_are_labelled(smoke_run):
    _, _, _ = smoke_run
    m = json.loads((smoke_run[0] / "manifest.json").read_text())
    arm = json.loads(json.dumps(m["benchmarks"][0]))
    arm["device"], arm["device_info"] = "arm:pi@board", {"kind": "arm", "machine": "aarch64", "emulated": "qemu-user"}
    m["benchmarks"].append(arm)
    md, page, _ = render([("run", m)])
    assert "Latency and accuracy on arm:pi@board (emulated: qemu-user)" in md
    assert "plumbing checks, not performance numbers" in md and 'class="warn"' in page


def test_report_command_compares_runs_side_by_side(smoke_run, tmp_path):
    out, _, _ = smoke_run
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(out / "manifest.json", tmp_path / name / "manifest.json")
    proc = subprocess.run(
        [str(BIN / "edgepipe"), "report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "## Runs side by side" in md and "## a" in md and "## b" in md
    assert (tmp_path / "cmp" / "report.html").stat().st_size > 10_000
    proc = subprocess.run(
        [str(BIN / "edgepipe"), "report", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 7 and "has no manifest.json" in proc.stderr and "Traceback" not in proc.stderr
