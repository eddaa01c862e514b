"""Local x86 device: runs the standalone runner in a fresh process per measurement.

A fresh process per model keeps one model's memory and thread pools from skewing the
next one's numbers; `taskset` pins it to cores when asked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgepipe.config import BenchConfig
from edgepipe.devices.remote import RUNNER, runner_argv
from edgepipe.errors import DeviceError


class X86Device:
    """This machine. Same runner, same flags as on a board; no transport."""

    name = "x86"

    def benchmark(self, model: Path, inputs: Path, bench: BenchConfig) -> dict[str, Any]:
        return benchmark(model, inputs, bench)

    def close(self) -> None:
        pass


def benchmark(model: Path, inputs: Path, bench: BenchConfig, timeout_s: float = 1800) -> dict[str, Any]:
    if bench.pin_cores and shutil.which("taskset") is None:
        raise DeviceError("bench.pin_cores needs `taskset` (Debian package util-linux); install it or unset pin_cores")
    cmd = runner_argv(sys.executable, str(RUNNER), str(model), str(inputs), bench)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"x86 runner for {model.name} took longer than {timeout_s:.0f} s; lower bench.runs") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DeviceError(f"x86 runner failed on {model.name}: {last}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["device"] = "x86"
    result["device_info"] = {"kind": "x86", "machine": result["machine"], "cpu": result["cpu"], "cpu_count": result["cpu_count"], "emulated": None, "pinned_cores": bench.pin_cores}
    return result
