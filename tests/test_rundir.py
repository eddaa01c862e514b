import os
import subprocess
import sys

import pytest

from edgepipe.errors import RunDirError
from edgepipe.rundir import RunDir, atomic_path, stable_hash, write_bytes_atomic


def test_stage_runs_once_then_is_reused(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        f = tmp_path / "run" / "a.bin"
        write_bytes_atomic(f, b"payload")
        return {"value": 42}, [f]

    with RunDir(tmp_path / "run") as rd:
        assert rd.stage("s", "k1", compute) == ({"value": 42}, False)
        assert rd.stage("s", "k1", compute) == ({"value": 42}, True)
        assert len(calls) == 1
        # a changed key (changed config) reruns
        assert rd.stage("s", "k2", compute)[1] is False
        assert len(calls) == 2


def test_corrupted_artifact_is_detected_by_hash_and_rebuilt(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        f = tmp_path / "run" / "a.bin"
        write_bytes_atomic(f, b"payload")
        return {}, [f]

    with RunDir(tmp_path / "run") as rd:
        rd.stage("s", "k", compute)
        (tmp_path / "run" / "a.bin").write_bytes(b"paylo")  # truncated
        assert rd.stage("s", "k", compute)[1] is False
        (tmp_path / "run" / "a.bin").unlink()
        assert rd.stage("s", "k", compute)[1] is False
        assert len(calls) == 3


def test_atomic_write_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_second_process_on_the_same_out_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from edgepipe.rundir import RunDir; import time; r=RunDir({str(out)!r}).open(); print('locked', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=rf"already in progress in .* \(pid {holder.pid}\)"):
            RunDir(out).open()
    finally:
        holder.kill()
        holder.wait()
    RunDir(out).open().close()  # a killed holder releases the lock


def test_out_that_is_a_file_or_unwritable(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        RunDir(f).open()
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(RunDirError, match="not writable"):
            RunDir(ro / "sub").open()


def test_stable_hash_ignores_key_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})
