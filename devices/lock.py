"""One run per device at a time, across edgepipe processes on this machine.

Two benchmarks on one board (or two on this x86 box) skew each other's latencies, so a
device is held under an flock'd file named after it for as long as a run is connected
to it. A second run waits, saying who holds the device, and gives up after
`bench.device_lock_timeout_s`. flock is released by the kernel when a holder dies, even
on kill -9. The name is the device string: two spellings of one board (host name and IP)
are two locks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgepipe.config import default_cache_dir
from edgepipe.device_spec import parse_device
from edgepipe.errors import DeviceError
from edgepipe.rundir import FileLock


def default_lock_dir() -> Path:
    return default_cache_dir() / "locks"


class DeviceLock:
    def __init__(
        self,
        device: str,
        directory: Path | None = None,
        timeout_s: float = 3600,
        on_wait: Callable[[str], None] = lambda _: None,
    ):
        self.device = parse_device(device).text
        self.lock = FileLock(Path(directory or default_lock_dir()) / f"{parse_device(device).slug}.lock")
        self.timeout_s, self.on_wait = timeout_s, on_wait

    def acquire(self) -> DeviceLock:
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        command = " ".join([program, *[a for a in sys.argv[1:2] if not a.startswith("-")]])  # e.g. "edgepipe bench"
        deadline = time.monotonic() + self.timeout_s
        told = False
        while True:
            try:
                self.lock.path.parent.mkdir(parents=True, exist_ok=True)
                if self.lock.try_acquire(f"pid {os.getpid()} ({command})"):
                    return self
            except OSError as e:
                raise DeviceError(
                    f"cannot create the device lock {self.lock.path} ({e.strerror}); set bench.lock_dir to a writable folder"
                ) from None
            if time.monotonic() >= deadline:
                raise DeviceError(
                    f"{self.device} is in use by {self.lock.holder()} (waited {self.timeout_s:g} s); wait for it or raise bench.device_lock_timeout_s"
                )
            if not told:
                self.on_wait(f"waiting for {self.device}: in use by {self.lock.holder()}")
                told = True
            time.sleep(0.2)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
