"""Benchmark devices: the local x86 CPU, ARM boards over SSH, Android devices over adb.

Every device runs the same standalone runner (devices/runner.py) with the same flags and
returns the same JSON; `open_device` picks the transport from the device string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Device(Protocol):
    name: str

    def benchmark(self, model, inputs, bench) -> dict[str, Any]: ...
    def close(self) -> None: ...


def open_device(text: str, bench) -> Device:
    """Connects now: unreachable hosts, unknown host keys and missing runtimes fail here, with one line."""
    from edgepipe.devices.spec import parse_device

    spec = parse_device(text)
    if spec.kind == "arm":
        from edgepipe.devices.arm import open_arm

        return open_arm(spec, bench.ssh)
    if spec.kind == "android":
        from edgepipe.devices.android import open_android

        return open_android(spec, bench.android)
    from edgepipe.devices.x86 import X86Device

    return X86Device()


def open_locked(text: str, bench, log: Callable[[str], None]):
    """(device, lock): the device held for this process (see devices/lock.py), then connected with
    its own fleet settings. The caller closes the device and releases the lock."""
    from edgepipe.devices.lock import DeviceLock

    lock = DeviceLock(text, bench.lock_dir, bench.device_lock_timeout_s, on_wait=log).acquire()
    try:
        log(f"connecting to {text}")
        return open_device(text, bench.for_device(text)), lock
    except BaseException:
        lock.release()
        raise
