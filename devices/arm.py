"""ARM boards (aarch64 Linux) over SSH, with paramiko.

The board needs python3 with numpy and onnxruntime / ai-edge-litert (the runner's only
imports). Host keys are verified against known_hosts unless the user opts out by name
(`bench.ssh.insecure_skip_host_key_check`); authentication is by key or agent only, so
no secret ever reaches the config, the manifest or a log.

Tested here against a real OpenSSH server on 127.0.0.1 whose `python3` runs the aarch64
interpreter under qemu-user (tests/rig, tools/rig/arm_board.sh): real SSH, real aarch64
kernels, emulated latency.
"""

from __future__ import annotations

import select
import shlex
import time
from pathlib import Path

from edgepipe.config import SshConfig
from edgepipe.device_spec import DeviceSpec
from edgepipe.devices.remote import CommandResult, RemoteRunnerDevice
from edgepipe.errors import DeviceError


class SshTransport:
    def __init__(self, spec: DeviceSpec, cfg: SshConfig):
        import paramiko

        self.name = spec.text
        self.port = spec.port or 22
        self.host = spec.host
        self.client = paramiko.SSHClient()
        known_hosts = Path(cfg.known_hosts or Path.home() / ".ssh" / "known_hosts").expanduser()
        if cfg.insecure_skip_host_key_check:
            self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            if known_hosts.is_file():
                self.client.load_host_keys(str(known_hosts))
            elif cfg.known_hosts is not None:
                raise DeviceError(
                    f"{self.name}: known_hosts file {known_hosts} does not exist; fix bench.ssh.known_hosts"
                )
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if cfg.identity_file is not None and not Path(cfg.identity_file).expanduser().is_file():
            raise DeviceError(f"{self.name}: SSH key {cfg.identity_file} does not exist; fix bench.ssh.identity_file")
        where = f"[{self.host}]:{self.port}" if self.port != 22 else self.host
        try:
            self.client.connect(
                self.host,
                port=self.port,
                username=spec.user,
                key_filename=str(Path(cfg.identity_file).expanduser()) if cfg.identity_file else None,
                timeout=cfg.connect_timeout_s,
                banner_timeout=cfg.connect_timeout_s,
                auth_timeout=cfg.connect_timeout_s,
            )
        except paramiko.BadHostKeyException:
            raise DeviceError(
                f"{self.name}: the host key of {where} does NOT match {known_hosts} (a re-imaged board, or someone in the middle);"
                f" verify the board, then `ssh-keygen -R '{where}'` and reconnect"
            ) from None
        except paramiko.AuthenticationException:
            raise DeviceError(
                f"{self.name}: SSH authentication as {spec.user!r} failed; set bench.ssh.identity_file or add the key to ssh-agent"
            ) from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise DeviceError(
                    f"{self.name}: {where} is not in {known_hosts}; check its fingerprint and add it "
                    f"(`ssh-keyscan -p {self.port} {self.host} >> {known_hosts}`), or set bench.ssh.known_hosts"
                ) from None
            raise DeviceError(f"{self.name}: SSH handshake with {where} failed ({e}); is it an SSH server?") from None
        except (TimeoutError, OSError) as e:
            raise DeviceError(
                f"{self.name}: cannot reach {self.host}:{self.port} ({e.strerror or e}); check the address, that the board is on and sshd runs"
            ) from None
        self.sftp = self.client.open_sftp()

    def alive(self) -> bool:
        t = self.client.get_transport()
        return t is not None and t.is_active()

    def run(self, command: str, timeout: float) -> CommandResult:
        import paramiko

        if not self.alive():
            return CommandResult(None, "", "")
        try:
            chan = self.client.get_transport().open_session(timeout=30)
            chan.exec_command(command)
        except (OSError, EOFError, paramiko.SSHException) as e:
            return CommandResult(None, "", str(e))
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while True:
            select.select([chan], [], [], 1.0)
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                chan.close()
                raise DeviceError(
                    f"{self.name}: `{command[:80]}` ran longer than {timeout:.0f} s; raise bench.ssh.command_timeout_s"
                )
        status = chan.recv_exit_status()
        chan.close()
        # -1: the channel closed without an exit status (connection lost or the process was killed by a signal)
        return CommandResult(
            None if status == -1 else status, out.decode(errors="replace"), err.decode(errors="replace")
        )

    def push(self, local: Path, remote: str) -> None:
        import paramiko

        try:
            self.sftp.put(str(local), remote)
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise DeviceError(
                f"{self.name}: upload of {local.name} failed ({e}); check the link and free space - finished results are kept, rerun to resume"
            ) from None

    def make_workdir(self) -> str:
        res = self.run('mktemp -d "${TMPDIR:-/tmp}/edgepipe.XXXXXXXX"', 60)
        path = res.stdout.strip()
        if res.returncode != 0 or not path.startswith("/"):
            raise DeviceError(
                f"{self.name}: cannot create a work dir on the board ({(res.stderr or 'connection lost').strip()[:160]})"
            )
        return path

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:
            pass
        finally:
            self.client.close()


def open_arm(spec: DeviceSpec, cfg: SshConfig) -> RemoteRunnerDevice:
    transport = SshTransport(spec, cfg)
    info: dict[str, object] = {
        "kind": "arm",
        "transport": "ssh",
        "host": spec.host,
        "port": spec.port or 22,
        "user": spec.user,
    }
    res = transport.run("uname -srm; cat /proc/device-tree/model 2>/dev/null | tr -d '\\000'", 60)
    if res.returncode is not None:
        lines = res.stdout.strip().splitlines()
        info["uname"] = lines[0] if lines else None
        info["board"] = lines[1] if len(lines) > 1 else None
    check = transport.run(f"command -v {shlex.quote(cfg.python)}", 60)
    if check.returncode != 0:
        transport.close()
        raise DeviceError(
            f"{spec.text}: {cfg.python!r} is not on the board; install python3 there or set bench.ssh.python"
        )
    return RemoteRunnerDevice(spec, transport, cfg.python, cfg.command_timeout_s, info)
