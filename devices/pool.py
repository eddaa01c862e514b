"""Opening devices and driving several at once: one worker per device, a device's failure
stops only that device.

A device is held under a lock (lock.py) for as long as a run is connected to it, connected on
first use and kept for the run, so a fully resumed run never dials a board.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from edgepipe.config import AndroidConfig, BenchConfig, SshConfig
from edgepipe.device_spec import parse_device
from edgepipe.devices.android import open_android
from edgepipe.devices.arm import open_arm
from edgepipe.devices.lock import DeviceLock
from edgepipe.devices.x86 import X86Device
from edgepipe.errors import DeviceError
from edgepipe.measurement import Measured, Measurement


class Device(Protocol):
    name: str

    def benchmark(self, model: Path, inputs: Path, measurement: Measurement) -> Measured: ...
    def close(self) -> None: ...


def open_device(text: str, ssh: SshConfig, android: AndroidConfig) -> Device:
    """Connects now: unreachable hosts, unknown host keys and missing runtimes fail here, with one line."""
    spec = parse_device(text)
    if spec.kind == "arm":
        return open_arm(spec, ssh)
    if spec.kind == "android":
        return open_android(spec, android)
    return X86Device()


def open_locked(text: str, bench: BenchConfig, log: Callable[[str], None]):
    """(device, lock): the device held for this process (see lock.py), then connected with its own
    fleet settings. The caller closes the device and releases the lock."""
    lock = DeviceLock(text, bench.lock_dir, bench.device_lock_timeout_s, on_wait=log).acquire()
    try:
        log(f"connecting to {text}")
        return open_device(text, *bench.connection(text)), lock
    except BaseException:
        lock.release()
        raise


class DevicePool:
    """The run's devices: locked and connected on first use, closed (and unlocked) together."""

    def __init__(self, bench: BenchConfig, log: Callable[[str], None]):
        self.bench, self.log = bench, log
        self._open: dict[str, tuple[Device, Any]] = {}
        self._lock = threading.Lock()

    def get(self, text: str) -> Device:
        with self._lock:
            if text not in self._open:
                self._open[text] = open_locked(text, self.bench, self.log)
            return self._open[text][0]

    def close(self) -> None:
        with self._lock:
            for device, lock in self._open.values():
                try:
                    device.close()
                finally:
                    lock.release()
            self._open.clear()

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def each(self, devices: Iterable[str], work: Callable[[str], None], side_by_side: bool) -> dict[str, Any]:
        """`work(device)` for every device, one worker thread per device when `side_by_side` (here
        the workers only wait on SSH/adb; under the emulated test rig they share this CPU).

        A device that fails (DeviceError) does not stop the others; the first failure is raised once
        they have all finished, naming the others. Returns how the devices were driven, for
        "fleet wall time vs the sum of its devices"."""
        devices = list(devices)
        failures: dict[str, DeviceError] = {}
        sessions: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()

        def one(text: str) -> None:
            start = time.perf_counter()
            try:
                work(text)
            except DeviceError as e:
                failures[text] = e
            sessions[text] = {
                "seconds": round(time.perf_counter() - start, 2),
                "ok": text not in failures,
                "error": str(failures[text]) if text in failures else None,
            }

        if side_by_side:
            with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="device") as pool:
                for future in [pool.submit(one, text) for text in devices]:
                    future.result()  # re-raises what is not a device failure (a bug)
        else:
            for text in devices:
                one(text)
        driven = {
            "parallel": side_by_side,
            "wall_s": round(time.perf_counter() - t0, 2),
            "devices": {t: sessions[t] for t in devices if t in sessions},
        }
        if failures:
            (_, first), *others = failures.items()
            ok = [t for t in devices if t not in failures]
            if others or ok:
                first = DeviceError(
                    f"{first}"
                    + (f"; also failed: {', '.join(t for t, _ in others)}" if others else "")
                    + (f"; {', '.join(ok)} finished" if ok else "")
                )
            raise PoolFailure(first, driven)
        return driven


class PoolFailure(DeviceError):
    """A device failed; `driven` still says how every device went."""

    def __init__(self, error: DeviceError, driven: dict[str, Any]):
        super().__init__(str(error))
        self.driven = driven
