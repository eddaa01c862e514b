"""Android devices over adb, with adbutils (talks to the adb server, like `adb -s SERIAL ...`).

Two ways to measure, picked per device:
- python3 on the device (Termux, rooted boards, Linux-on-Android): the same standalone
  runner as every other device, for .onnx/.ort/.tflite, latency and accuracy.
- no python: a user-supplied LiteRT `benchmark_model` binary (built for android_aarch64;
  none is published on PyPI or Debian) is pushed and run for .tflite models
  (see benchmark_model.py for its flags, its output and how accuracy is read back).

No adbd exists for Linux, so the tests run this module against a loopback daemon that
speaks the real ADB protocol (tests/rig/adbd.py) through the real adb server, with
commands executed by an aarch64 sysroot under qemu. The benchmark_model path cannot run
here (no binary); its parsing and file formats are tested on recorded real output.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
from pathlib import Path
from typing import Any

from edgepipe.config import AndroidConfig
from edgepipe.device_spec import DeviceSpec
from edgepipe.devices import benchmark_model
from edgepipe.devices.remote import CommandResult, RemoteRunnerDevice
from edgepipe.devices.standalone import sensors
from edgepipe.errors import DeviceError
from edgepipe.measurement import Conditions, EnergyRecord, Measured, Measurement, ThermalRecord

PROPS = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "soc": "ro.soc.model",
    "platform": "ro.board.platform",
    "abi": "ro.product.cpu.abi",
    "android": "ro.build.version.release",
    "sdk": "ro.build.version.sdk",
}


def _adb_errors():
    import adbutils

    return (adbutils.AdbError, OSError, EOFError)


def _adb_sync_errors():
    """adbutils 2.x's sync client checks replies with ``assert`` and ``struct.unpack``: a phone unplugged mid-push
    surfaces as AssertionError (``assert "STAT" == ...`` on an empty read) or struct.error, not AdbError. Seen in
    CI when the cable went between two artifacts; the rig reproduces it with ``unplug_at_sync``."""
    import struct

    return (*_adb_errors(), AssertionError, struct.error, ValueError)


def _reason(e: Exception) -> str:
    return str(e).strip() or f"{type(e).__name__}: the connection closed mid-transfer"


class AdbTransport:
    def __init__(self, spec: DeviceSpec, cfg: AndroidConfig):
        import adbutils

        self.cfg = cfg
        client = adbutils.AdbClient(host=cfg.adb_host, port=cfg.adb_port, socket_timeout=30)
        try:
            serials = [d.serial for d in client.device_list()]
        except _adb_errors() as e:
            raise DeviceError(
                f"android: no adb server at {cfg.adb_host}:{cfg.adb_port} ({e}); start it with `adb start-server` "
                "or set bench.android.adb_host/adb_port"
            ) from None
        if spec.serial is None:
            if not serials:
                raise DeviceError(
                    "android: no device is connected (`adb devices` is empty); plug one in and allow USB debugging"
                )
            if len(serials) > 1:
                raise DeviceError(
                    f"android: {len(serials)} devices are connected ({', '.join(serials)}); pick one with android:SERIAL"
                )
            serial = serials[0]
        else:
            if spec.serial not in serials:
                listed = ", ".join(serials) or "none"
                raise DeviceError(
                    f"android:{spec.serial} is not connected (adb devices: {listed}); check the serial or the cable"
                )
            serial = spec.serial
        self.name = f"android:{serial}"
        self.serial = serial
        self.device = client.device(serial=serial)

    def run(self, command: str, timeout: float) -> CommandResult:
        import adbutils

        try:
            r = self.device.shell2(command, timeout=timeout, v2=True)
        except adbutils.AdbTimeout:
            raise DeviceError(
                f"{self.name}: `{command[:80]}` ran longer than {timeout:.0f} s; raise bench.android.command_timeout_s"
            ) from None
        except _adb_errors() as e:
            return CommandResult(None, "", str(e))
        return CommandResult(r.returncode, r.stdout, r.stderr)

    def push(self, local: Path, remote: str, mode: int = 0o644) -> None:
        try:
            self.device.sync.push(local, remote, mode=mode)
        except _adb_sync_errors() as e:
            raise DeviceError(
                f"{self.name}: push of {local.name} failed ({_reason(e)}); check the cable and free space - finished results are kept, rerun to resume"
            ) from None

    def pull(self, remote: str, local: Path) -> None:
        try:
            self.device.sync.pull(remote, local)
        except _adb_sync_errors() as e:
            raise DeviceError(
                f"{self.name}: pull of {posixpath.basename(remote)} failed ({_reason(e)}); finished results are kept, rerun to resume"
            ) from None

    def make_workdir(self) -> str:
        path = posixpath.join(self.cfg.remote_dir, "run-" + secrets.token_hex(6))
        res = self.run(shlex.join(["mkdir", "-p", path]), 60)
        if res.returncode != 0:
            reason = (res.stderr or res.stdout or "connection lost").strip()[:160]
            raise DeviceError(
                f"{self.name}: cannot create {path} ({reason}); set bench.android.remote_dir to a writable folder"
            )
        return path

    def getprops(self) -> dict[str, str]:
        res = self.run("getprop", 60)
        props: dict[str, str] = {}
        for line in res.stdout.splitlines():
            if line.startswith("[") and "]: [" in line:
                key, _, value = line[1:].partition("]: [")
                props[key] = value.rstrip("]")
        return props

    def close(self) -> None:
        pass  # adbutils opens one socket per request


class BenchmarkModelDevice:
    """.tflite through LiteRT's benchmark_model binary, for devices without python."""

    def __init__(self, spec: DeviceSpec, transport: AdbTransport, binary: Path, timeout_s: float, info: dict[str, Any]):
        self.spec, self.transport, self.binary, self.timeout_s, self.info = spec, transport, binary, timeout_s, info
        self.workdir: str | None = None

    def _work(self) -> str:
        if self.workdir is None:
            self.workdir = self.transport.make_workdir()
            self.transport.push(self.binary, posixpath.join(self.workdir, "benchmark_model"), mode=0o755)
        return self.workdir

    def benchmark(self, model: Path, inputs: Path, measurement: Measurement) -> Measured:
        if model.suffix == ".pte":  # ExecuTorch's own benchmark binary is not published for Android either
            raise DeviceError(
                f"{self.transport.name}: {model.name} needs python3 with torch and executorch on the device "
                "(benchmark_model runs .tflite only, and edgepipe takes no ExecuTorch runner binary yet); "
                "limit bench.artifacts to tflite_*"
            )
        if model.suffix != ".tflite":
            raise DeviceError(
                f"{self.transport.name}: {model.name} needs python3 + onnxruntime on the device (benchmark_model runs .tflite only); "
                "install Termux python or limit bench.artifacts to tflite_*"
            )
        heat = measurement.thermal
        cool = (
            sensors.cool_down(heat.cool_below_c, heat.cool_timeout_s, snapshot=lambda: self.state()[1])
            if heat.cool_below_c is not None
            else sensors.NO_COOL_DOWN
        )
        conditions, before = self.state()
        result = benchmark_model.run(self.transport, self._work(), model, inputs, measurement, self.timeout_s)
        end, after = self.state()
        result.device, result.device_info = self.spec.text, self.info | {"pinned_cores": measurement.pin_cores}
        cores = measurement.pin_cores or sensors.NA + " (benchmark_model's affinity; pin it with bench.pin_cores)"
        result.conditions = Conditions.model_validate(
            conditions | {"cores_used": cores, "load_avg_end": end["load_avg"]}
        )
        result.thermal = ThermalRecord.model_validate(
            sensors.thermal_record(cool, before, after, heat.warm_margin_c, heat.cool_below_c, heat.cool_timeout_s)
        )
        result.energy = EnergyRecord(reason=sensors.NA + " (benchmark_model runs without edgepipe's power sampler)")
        return result

    def state(self) -> tuple[dict, dict]:
        """(conditions, thermal snapshot) of the phone now, read in one adb shell command and parsed here
        by the runner's own sensor code (the phone has no python to run it)."""
        res = self.transport.run(sensors.CAPTURE, 60)
        with sensors.reading(sensors.CapturedSource(res.stdout if res.returncode is not None else "")):
            return sensors.conditions(), sensors.thermal_snapshot()

    def close(self) -> None:
        if self.workdir is not None:
            self.transport.run(shlex.join(["rm", "-rf", self.workdir]), 60)


def open_android(spec: DeviceSpec, cfg: AndroidConfig):
    transport = AdbTransport(spec, cfg)
    props = transport.getprops()
    info: dict[str, Any] = {"kind": "android", "transport": "adb", "serial": transport.serial}
    info |= {name: props.get(key) for name, key in PROPS.items()}
    if cfg.python:
        check = transport.run(f"command -v {shlex.quote(cfg.python)}", 60)
        if check.returncode == 0:
            return RemoteRunnerDevice(
                spec, transport, cfg.python, cfg.command_timeout_s, info | {"method": "python runner"}
            )
    if cfg.benchmark_model is not None:
        if not Path(cfg.benchmark_model).is_file():
            raise DeviceError(
                f"bench.android.benchmark_model {cfg.benchmark_model} does not exist; point it at the android_aarch64 binary"
            )
        return BenchmarkModelDevice(
            spec, transport, Path(cfg.benchmark_model), cfg.command_timeout_s, info | {"method": "benchmark_model"}
        )
    raise DeviceError(
        f"{transport.name}: no {cfg.python or 'python'} on the device and no benchmark_model binary; install Termux python "
        "(pkg install python; pip install numpy onnxruntime ai-edge-litert) or set bench.android.benchmark_model=PATH"
    )
