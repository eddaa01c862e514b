"""The run directory: atomic files, a lock, and stage records that make runs resumable.

A stage is reused only if its record's key (a hash of the config it depends on and
of its upstream stages' keys) matches *and* every file it produced still has the
sha256 it had when written. A run killed mid-stage leaves no record for that stage
(records are written last) and at most a `*.tmp` file, which nothing trusts.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgepipe.errors import RunDirError

_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """Hash of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _disk_error(path: Path, e: OSError) -> RunDirError:
    if e.errno == errno.ENOSPC:
        return RunDirError(f"no space left on the device while writing {path}; free space or choose another --out")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RunDirError(f"cannot write {path} (permission denied); choose a writable --out")
    return RunDirError(f"cannot write {path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise _disk_error(path, e) from e
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


class FileLock:
    """An flock'd file that names its holder (run dir, device). The kernel releases it when the
    holder dies, even on kill -9, so a stale file never blocks anyone."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = None

    def try_acquire(self, holder: str) -> bool:
        """Takes the lock and writes `holder` into the file, or returns False if another process has it."""
        f = open(self.path, "a+")  # noqa: SIM115 - held open as the lock until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(holder)
        f.flush()
        self._file = f
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def release(self) -> None:
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class RunDir:
    """An output directory owned by one process at a time (flock, released even on kill -9)."""

    def __init__(self, root: Path, writer: bool = True):
        self.root = Path(root)
        self.writer = writer  # False: a training process beside rank 0, which owns and writes the dir
        self._lock = FileLock(self.root / "run.lock")

    def open(self) -> RunDir:
        if not self.writer:
            return self
        if self.root.exists() and not self.root.is_dir():
            raise RunDirError(f"--out {self.root} is a file, not a directory; choose a directory path")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunDirError(
                f"--out {self.root} is not writable ({e.strerror}); choose a writable directory"
            ) from None
        if not self._lock.try_acquire(str(os.getpid())):
            raise RunDirError(
                f"a run is already in progress in {self.root} (pid {self._lock.holder()}); wait for it to finish or use another --out"
            )
        self._remove_orphaned_temp_files()
        return self

    def _remove_orphaned_temp_files(self) -> None:
        """Temp files of writes that a killed process never renamed; we hold the lock, so none is in flight."""
        for tmp in self.root.rglob(".*.tmp"):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunDir:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, rel: str) -> Path:
        return self.root / rel

    def rel(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def _record_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def cached(self, stage: str, key: str) -> dict[str, Any] | None:
        """The stage's result if it finished with this key and its files are intact."""
        rec_path = self._record_path(stage)
        try:
            record = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            return None
        if record.get("key") != key:
            return None
        for rel, digest in record.get("files", {}).items():
            f = self.root / rel
            if not f.is_file() or sha256_file(f) != digest:
                return None
        return record["result"]

    def files_of(self, stage: str) -> dict[str, str]:
        """The files a recorded stage produced, run-dir-relative path -> sha256, in the order it listed them."""
        try:
            return dict(json.loads(self._record_path(stage).read_text()).get("files", {}))
        except (OSError, ValueError):
            return {}

    def record(self, stage: str, key: str, result: dict[str, Any], files: list[Path] = ()) -> None:
        if not self.writer:
            return
        hashes = {self.rel(f): sha256_file(f) for f in files}
        write_json_atomic(self._record_path(stage), {"stage": stage, "key": key, "files": hashes, "result": result})

    def stage(
        self, stage: str, key: str, compute: Callable[[], tuple[dict[str, Any], list[Path]]]
    ) -> tuple[dict[str, Any], bool]:
        """Run `compute` unless a valid record exists; returns (result, reused)."""
        hit = self.cached(stage, key)
        if hit is not None:
            return hit, True
        result, files = compute()
        self.record(stage, key, result, files)
        return result, False
