"""A real OpenSSH server on 127.0.0.1 with throwaway keys, for tests that drive a "board" over SSH.

Stdlib only. The server logs in only the user running it (as root: root, by key). Commands run
with PATH = path_prepend + /usr/local/bin:/usr/bin:/bin, so with path_prepend=[arm64/bin] from
tools/rig/arm_board.sh a plain `python3` on the far side is the emulated aarch64 python.

    with LoopbackSshd(tmp_path / "sshd", path_prepend=[board / "bin"]) as ep:
        client.load_host_keys(str(ep.known_hosts))
        client.connect(ep.host, ep.port, username=ep.user, key_filename=str(ep.key_path))

`kill()` drops the board abruptly: sshd and every process of every session (a remote
benchmark included) get SIGKILL, as when a board loses power mid-run.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class SshEndpoint:
    host: str
    port: int
    user: str
    key_path: Path  # the client's private key (ed25519, no passphrase)
    known_hosts: Path  # one line: "[127.0.0.1]:PORT ssh-ed25519 AAAA..."
    host_key_pub: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        for c in tree.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _signal(pids: Iterable[int], sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


class LoopbackSshd:
    def __init__(self, workdir: Path, path_prepend: Iterable[Path] = (), env: dict[str, str] | None = None):
        self.workdir = Path(workdir).resolve()
        self.path_prepend = [Path(p).resolve() for p in path_prepend]
        self.env = dict(env or {})  # more variables for every session (the simulated sensors' root)
        self.proc: subprocess.Popen | None = None
        self.endpoint: SshEndpoint | None = None
        self.log_path = self.workdir / "sshd.log"

    # ---- setup ---------------------------------------------------------------------------
    def _keygen(self, path: Path, comment: str) -> None:
        if not path.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                check=True,
                stdin=subprocess.DEVNULL,
            )

    def _config(self, port: int) -> Path:
        w = self.workdir
        path = ":".join([*(str(p) for p in self.path_prepend), BASE_PATH])
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [
            "ListenAddress 127.0.0.1",
            f"Port {port}",
            f'HostKey "{w / "host_ed25519"}"',
            f'PidFile "{w / "sshd.pid"}"',
            f'AuthorizedKeysFile "{w / "authorized_keys"}"',
            f"AllowUsers {user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            # sshd applies SetEnv after its own default PATH, so it wins for every session; but
            # bash, the login shell, then sources ~/.bashrc for commands run by sshd (a pyenv
            # there puts its x86 python3 first). SHLVL=1 makes bash skip that: it reads
            # ~/.bashrc for sshd's commands only when it is a top-level shell (SHLVL < 2).
            f'SetEnv "PATH={path}" SHLVL=1' + "".join(f' "{k}={v}"' for k, v in self.env.items()),
            "Subsystem sftp internal-sftp",  # no dependency on where sftp-server lives
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "MaxSessions 64",
            "MaxStartups 64",
            "LoginGraceTime 30",
            "LogLevel INFO",
        ]
        config = w / "sshd_config"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> SshEndpoint:
        if self.proc is not None:
            raise RuntimeError("sshd already started")
        if not os.access(SSHD, os.X_OK) or shutil.which("ssh-keygen") is None:
            raise FileNotFoundError(f"{SSHD} and ssh-keygen are needed (apt-get install openssh-server)")
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        os.chmod(w, 0o700)
        self._keygen(w / "host_ed25519", "edgepipe-loopback-host")
        self._keygen(w / "client_ed25519", "edgepipe-loopback-client")
        (w / "authorized_keys").write_text((w / "client_ed25519.pub").read_text())
        host_pub = w / "host_ed25519.pub"
        if os.getuid() == 0:
            # privilege separation directory; a fresh container does not have it
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_error = ""
        for _ in range(5):  # the port may be taken between _free_port() and sshd's bind()
            port = _free_port()
            config = self._config(port)
            subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True)
            log = open(self.log_path, "ab")  # noqa: SIM115 - sshd's log for its lifetime
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            if self._wait_ready(port, timeout):
                kt, key = host_pub.read_text().split()[:2]
                (w / "known_hosts").write_text(f"[127.0.0.1]:{port} {kt} {key}\n")
                self.endpoint = SshEndpoint(
                    "127.0.0.1",
                    port,
                    pwd.getpwuid(os.getuid()).pw_name,
                    w / "client_ed25519",
                    w / "known_hosts",
                    host_pub,
                )
                return self.endpoint
            self.kill()
            last_error = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sshd did not start; its log:\n{last_error}")

    def _wait_ready(self, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(8).startswith(b"SSH-"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    # ---- teardown ------------------------------------------------------------------------
    def _session_pids(self) -> list[int]:
        # The sessions' processes call setsid(): only the parent links tell they are ours.
        return _descendants(self.proc.pid) if self.proc is not None else []

    def kill(self) -> None:
        """Abrupt: SIGKILL sshd and all its session children (a board losing power mid-run)."""
        if self.proc is None:
            return
        # Freeze the whole tree first so nothing forks or gets reparented while we collect it.
        pids = [self.proc.pid, *self._session_pids()]
        _signal(pids, signal.SIGSTOP)
        pids = list(dict.fromkeys([*pids, *self._session_pids()]))
        _signal(pids, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful: SIGTERM sshd and its sessions, then SIGKILL whatever is left."""
        if self.proc is None:
            return
        pids = [*self._session_pids(), self.proc.pid]
        _signal(pids, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p) for p in pids):
            time.sleep(0.05)
        _signal([p for p in pids if _alive(p)], signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> SshEndpoint:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 :][:1] != b"Z"
