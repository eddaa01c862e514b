"""The part every remote device shares: copy the standalone runner, the eval inputs and a
model into a private work dir on the device, run the runner there, read its JSON back.

A transport (SSH for ARM boards, adb for Android) only moves files and runs one shell
command line. Every remote path and argument goes through `shlex.quote`, so file names
with spaces, quotes, `;`, `$(...)` or newlines stay names. The work dir is removed on close.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edgepipe.device_spec import DeviceSpec
from edgepipe.errors import DeviceError
from edgepipe.measurement import Measured, Measurement

RUNNER = Path(__file__).parent / "standalone" / "runner.py"
SENSORS = RUNNER.with_name("sensors.py")  # the runner imports it from its own folder
INPUT_FILES = ("input_ids.npy", "attention_mask.npy", "token_type_ids.npy", "labels.npy")


@dataclass
class CommandResult:
    returncode: int | None  # None: the connection dropped before the command finished
    stdout: str
    stderr: str


class Transport(Protocol):
    name: str  # "arm:pi@board" - used in every error message

    def run(self, command: str, timeout: float) -> CommandResult:
        """Runs one shell command line; a dropped connection returns returncode None, never hangs."""

    def push(self, local: Path, remote: str) -> None: ...
    def make_workdir(self) -> str: ...
    def close(self) -> None: ...


def runner_command(python: str, workdir: str, model: str, inputs: str, measurement: Measurement) -> str:
    """The runner's command line on the device, every argument quoted for its shell."""
    runner = posixpath.join(workdir, "runner.py")
    return shlex.join(
        measurement.pinned([python, runner, "--model", model, "--inputs", inputs, *measurement.to_argv()])
    )


def parse_runner_output(name: str, model: str, res: CommandResult) -> dict[str, Any]:
    """The runner prints one JSON line; its user errors are one `runner: ...` line on stderr."""
    if res.returncode is None:
        raise DeviceError(
            f"{name}: connection lost while benchmarking {model}; finished results are kept, rerun to resume"
        )
    lines = [ln for ln in (res.stdout or "").splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        said = [ln for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
        reason = next((ln.removeprefix("runner: ") for ln in reversed(said) if ln.startswith("runner: ")), None)
        if reason is None:
            reason = said[-1][:200] if said else "no output"
            if res.returncode == 127 or "not found" in reason:
                reason += " (is python3 installed on the device? set bench.ssh.python / bench.android.python)"
        raise DeviceError(f"{name}: runner failed on {model}: {reason}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise DeviceError(
            f"{name}: runner output for {model} is not JSON (the connection may have cut it); rerun"
        ) from None


class RemoteRunnerDevice:
    """Benchmarks through `devices/standalone/runner.py` on the device; uploads runner and inputs once per session."""

    def __init__(self, spec: DeviceSpec, transport: Transport, python: str, timeout_s: float, info: dict[str, Any]):
        self.spec, self.transport, self.python, self.timeout_s = spec, transport, python, timeout_s
        self.info = info
        self.workdir: str | None = None
        self._inputs: dict[Path, str] = {}

    @property
    def name(self) -> str:
        return self.transport.name

    def _work(self) -> str:
        if self.workdir is None:
            self.workdir = self.transport.make_workdir()
            for script in (RUNNER, SENSORS):
                self.transport.push(script, posixpath.join(self.workdir, script.name))
        return self.workdir

    def _upload_inputs(self, inputs: Path) -> str:
        inputs = inputs.resolve()
        if inputs not in self._inputs:
            remote = posixpath.join(self._work(), f"inputs{len(self._inputs)}")
            self.transport.run(shlex.join(["mkdir", "-p", remote]), 60)
            for name in INPUT_FILES:
                if not (inputs / name).is_file():
                    raise DeviceError(
                        f"eval input {inputs / name} is missing; rerun compress-and-export to rebuild {inputs}"
                    )
                self.transport.push(inputs / name, posixpath.join(remote, name))
            self._inputs[inputs] = remote
        return self._inputs[inputs]

    def benchmark(self, model: Path, inputs: Path, measurement: Measurement) -> Measured:
        remote_inputs = self._upload_inputs(inputs)
        remote_model = posixpath.join(self._work(), model.name)
        self.transport.push(model, remote_model)
        res = self.transport.run(
            runner_command(self.python, self._work(), remote_model, remote_inputs, measurement), self.timeout_s
        )
        if res.returncode is not None:
            self.transport.run(shlex.join(["rm", "-f", remote_model]), 60)
        raw = parse_runner_output(self.name, model.name, res)
        info = (
            self.info
            | {k: raw.get(k) for k in ("machine", "cpu", "cpu_count", "emulated")}
            | {"pinned_cores": measurement.pin_cores}
        )
        return Measured.model_validate(raw | {"model": model.name, "device": self.spec.text, "device_info": info})

    def close(self) -> None:
        try:
            if self.workdir is not None:
                self.transport.run(shlex.join(["rm", "-rf", self.workdir]), 60)
        except DeviceError:
            pass  # the device is gone; nothing left to clean
        finally:
            self.transport.close()
