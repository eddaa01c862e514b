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

from edgepipe.devices.remote import RUNNER
from edgepipe.errors import DeviceError
from edgepipe.measurement import Measured, Measurement


class X86Device:
    """This machine. Same runner, same flags as on a board; no transport."""

    name = "x86"

    def benchmark(self, model: Path, inputs: Path, measurement: Measurement) -> Measured:
        return benchmark(model, inputs, measurement)

    def close(self) -> None:
        pass


def benchmark(model: Path, inputs: Path, measurement: Measurement, timeout_s: float = 1800) -> Measured:
    if measurement.pin_cores and shutil.which("taskset") is None:
        raise DeviceError("bench.pin_cores needs `taskset` (Debian package util-linux); install it or unset pin_cores")
    cmd = measurement.pinned(
        [sys.executable, str(RUNNER), "--model", str(model), "--inputs", str(inputs), *measurement.to_argv()]
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"x86 runner for {model.name} took longer than {timeout_s:.0f} s; lower bench.runs") from None
    if proc.returncode != 0:
        said = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or ["no output"]
        reason = next((ln.removeprefix("runner: ") for ln in reversed(said) if ln.startswith("runner: ")), said[-1])
        raise DeviceError(f"x86 runner failed on {model.name}: {reason}")
    result = Measured.model_validate(json.loads(proc.stdout.strip().splitlines()[-1]))
    result.device = "x86"
    result.device_info = {
        "kind": "x86",
        "machine": result.get_extra("machine"),
        "cpu": result.get_extra("cpu"),
        "cpu_count": result.get_extra("cpu_count"),
        "emulated": None,
        "pinned_cores": measurement.pin_cores,
    }
    return result
