"""The emulated ARM board rig: an aarch64 sysroot under qemu-user behind a real sshd on 127.0.0.1.

tools/rig/arm_board.sh builds the board once (~40 s cold, cached under
$EDGEPIPE_RIG_DIR or ~/.cache/edgepipe/rig; < 1 s afterwards); tests/rig/sshd.py serves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rig.sshd import LoopbackSshd, SshEndpoint, _alive, _descendants
from tiny_models import eval_set, tiny_classifier

paramiko = pytest.importorskip("paramiko")

REPO = Path(__file__).resolve().parents[1]
ARM_BOARD = REPO / "tools" / "rig" / "arm_board.sh"
RUNNER = REPO / "devices" / "standalone" / "runner.py"

pytestmark = pytest.mark.e2e


def clean_env() -> dict[str, str]:
    """The host's environment without anything that would point the board's python at x86 code."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QEMU_"))}


@pytest.fixture(scope="module")
def board() -> Path:
    """The sysroot: DEST/bin/python3 is the aarch64 python, DEST/bin goes first on the board's PATH."""
    if shutil.which("qemu-aarch64-static") is None and os.geteuid() != 0:
        pytest.skip(
            "qemu-aarch64-static is missing and cannot be installed without root (apt-get install qemu-user-static)"
        )
    env = {**clean_env(), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ARM_BOARD)], capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode == 3:
        pytest.skip(f"qemu-aarch64-static is missing and cannot be installed: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, f"arm_board.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    dest = Path(proc.stdout.strip().splitlines()[-1])
    assert (dest / "bin" / "python3").is_file()
    return dest


@pytest.fixture(scope="module")
def sshd(board, tmp_path_factory):
    with LoopbackSshd(tmp_path_factory.mktemp("sshd"), path_prepend=[board / "bin"]) as endpoint:
        yield endpoint


def connect(ep: SshEndpoint, known_hosts: Path | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(str(known_hosts or ep.known_hosts))
    client.connect(
        ep.host,
        ep.port,
        username=ep.user,
        key_filename=str(ep.key_path),
        timeout=10,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def run(client, command: str, timeout: float = 120) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def test_board_python_is_aarch64_with_runtimes(board):
    proc = subprocess.run(
        [
            str(board / "bin" / "python3"),
            "-c",
            "import platform, numpy, onnxruntime, ai_edge_litert; print(platform.machine(), numpy.__version__, onnxruntime.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["aarch64", "2.4.6", "1.32.0"]
    # a second call is the cached no-op
    t0 = time.monotonic()
    subprocess.run(
        ["bash", str(ARM_BOARD)],
        check=True,
        capture_output=True,
        timeout=60,
        env={**clean_env(), "PYTHON": sys.executable},
    )
    assert time.monotonic() - t0 < 5


def test_ssh_reaches_the_board(sshd, tmp_path):
    with connect(sshd) as client:
        code, out, err = run(client, "python3 -c 'import platform;print(platform.machine())'")
        assert (code, out.strip()) == (0, "aarch64"), err
        code, out, _ = run(client, "uname -m")
        assert out.strip() == "aarch64"
        payload = os.urandom(100_000)
        (tmp_path / "up.bin").write_bytes(payload)
        with client.open_sftp() as sftp:
            remote = f"{sshd.key_path.parent}/remote.bin"
            sftp.put(str(tmp_path / "up.bin"), remote)
            assert sftp.stat(remote).st_size == len(payload)
            sftp.get(remote, str(tmp_path / "down.bin"))
        assert (tmp_path / "down.bin").read_bytes() == payload


def test_runner_on_board_matches_x86(sshd, tmp_path):
    local = tmp_path / "bench"
    local.mkdir()
    tiny_classifier(local / "model.onnx")
    eval_set(local / "eval")
    shutil.copy(RUNNER, local / "runner.py")
    shutil.copy(RUNNER.with_name("sensors.py"), local / "sensors.py")  # travels with it (stdlib only)
    args = "--model model.onnx --inputs eval --warmup 1 --runs 3 --seq-len 12 --predictions"

    x86 = subprocess.run(
        [sys.executable, "runner.py", *args.split()], cwd=local, capture_output=True, text=True, timeout=120
    )
    assert x86.returncode == 0, x86.stderr
    x86 = json.loads(x86.stdout)

    remote = f"{sshd.key_path.parent}/board-bench"
    with connect(sshd) as client:
        with client.open_sftp() as sftp:
            for d in (remote, f"{remote}/eval"):
                sftp.mkdir(d)
            for f in local.rglob("*"):
                if f.is_file():
                    sftp.put(str(f), f"{remote}/{f.relative_to(local)}")
        code, out, err = run(client, f"cd {remote} && python3 runner.py {args}", timeout=300)
    assert code == 0, err
    arm = json.loads(out)

    assert arm["machine"] == "aarch64" and x86["machine"] == "x86_64"
    assert "Cortex-A76" in arm["cpu"]
    assert arm["runtime"] == "onnxruntime" and arm["runtime_version"] == "1.32.0"
    assert arm["n_eval"] == x86["n_eval"] == 48
    assert arm["predictions"] == x86["predictions"]
    assert arm["accuracy"] == x86["accuracy"]
    assert 10 <= sum(x86["predictions"]) <= 38  # both classes are common: the comparison means something


def test_host_key_mismatch_is_refused(sshd, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kt, key = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {kt} {key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(sshd, known_hosts=wrong)
    # and a host that is not known at all is refused too (RejectPolicy)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(sshd, known_hosts=empty)


def test_kill_drops_the_board_mid_run(board, tmp_path):
    """kill() is a power cut: the client's channel dies and no process of the session survives."""
    rig = LoopbackSshd(tmp_path / "sshd", path_prepend=[board / "bin"])
    ep = rig.start()
    try:
        client = connect(ep)
        _, stdout, _ = client.exec_command(
            "python3 -c 'import time; print(\"up\", flush=True); time.sleep(120)'", timeout=60
        )
        assert stdout.readline().strip() == "up"  # the emulated python is running remotely
        session = _descendants(rig.proc.pid)
        assert any(
            "qemu-aarch64" in Path(f"/proc/{p}/cmdline").read_text(errors="replace") for p in session if _alive(p)
        )
        t0 = time.monotonic()
        rig.kill()
        assert stdout.channel.recv_exit_status() == -1  # closed without an exit status
        assert time.monotonic() - t0 < 10
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in session) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in session if _alive(p)]
        client.close()
    finally:
        rig.stop()
