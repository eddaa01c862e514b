"""A loopback stand-in for an Android phone's ``adbd``, speaking the real ADB wire protocol.

There is no adbd for Linux, yet the device-benchmark code talks to phones through the real
``adb`` server and ``adbutils``.  This daemon listens on 127.0.0.1, so the test suite can
``adb connect 127.0.0.1:PORT`` and drive it with the genuine client stack: framing, flow
control, shell protocol v2, and the sync (push/pull) sub-protocol are all exercised for real.
Commands run on this host via ``/bin/sh -c``; paths are not translated.

References: AOSP packages/modules/adb protocol.txt, SERVICES.TXT, SYNC.TXT, shell_protocol.h.
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time

VERSION = 0x01000001  # >= this, checksums are optional; WRTE still needs an OKAY each (no delayed_ack)
MAX_PAYLOAD = 256 * 1024
SYNC_DATA_MAX = 64 * 1024  # SYNC.TXT: a DATA chunk never exceeds 64 KiB
FEATURES = "shell_v2,cmd,fixed_push_mkdir"  # only what this file implements (no stat_v2/ls_v2/sendrecv_v2)
DEFAULT_PROPS = {
    "ro.product.name": "edgepipe_loopback",
    "ro.product.model": "edgepipe-loopback",
    "ro.product.device": "loopback",
    "ro.product.manufacturer": "edgepipe",
    "ro.board.platform": "qemu-cortex-a76",
    "ro.soc.model": "qemu-cortex-a76",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
}


def _tail(path: str, n: int = 2000) -> str:
    with open(path, errors="replace") as f:
        return f.read()[-n:]


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_CNXN, A_OPEN, A_OKAY, A_WRTE, A_CLSE = (_cmd(n) for n in (b"CNXN", b"OPEN", b"OKAY", b"WRTE", b"CLSE"))
_HEADER = struct.Struct("<6I")  # command, arg0, arg1, data_length, data_crc32 (byte sum), magic
# shell_protocol.h packet ids
SH_STDIN, SH_STDOUT, SH_STDERR, SH_EXIT, SH_CLOSE_STDIN, SH_WINDOW = range(6)


class _Closed(Exception):
    """The stream (or its whole connection) went away while we were writing to it."""


def _kill(pgid: int) -> None:
    """Kill a whole process group: ``sh -c 'a; b'`` forks, and killing only sh leaves b holding the pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Stream:
    """One ADB stream (host OPEN -> our OKAY). Incoming WRTE data is buffered; outgoing WRTEs are flow-controlled."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int):
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self.closed = False
        self.on_peer_close = lambda: None
        self._acked = threading.Event()
        self._wlock = threading.Lock()
        self._cv = threading.Condition()
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        with self._cv:
            self._buf += data
            self._cv.notify_all()

    def read_some(self) -> bytes:
        """Whatever has arrived (blocking); b"" once the host closed the stream."""
        with self._cv:
            self._cv.wait_for(lambda: self._buf or self.closed)
            data, self._buf = bytes(self._buf), bytearray()
            return data

    def read_exact(self, n: int) -> bytes:
        """Sync and shell-v2 packets may straddle WRTE boundaries, so reassemble by length."""
        with self._cv:
            self._cv.wait_for(lambda: len(self._buf) >= n or self.closed)
            if len(self._buf) < n:
                raise EOFError
            data = bytes(self._buf[:n])
            del self._buf[:n]  # front deletion is cheap for bytearray; slicing the rest would go quadratic
            return data

    def write(self, data: bytes) -> None:
        """Send as WRTEs of at most the negotiated payload, each waiting for the host's OKAY.

        The lock spans the whole call so shell-v2 packets from the stdout and stderr pumps never interleave.
        """
        with self._wlock:
            for off in range(0, len(data), self.conn.max_payload):
                if self.closed:
                    raise _Closed
                self._acked.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, data[off : off + self.conn.max_payload])
                while not self._acked.wait(0.5):
                    if self.conn.dead:  # belt and braces: a connection torn down mid-OPEN
                        raise _Closed
            if self.closed:
                raise _Closed

    def close(self) -> None:
        """Our side is done: one CLSE, then forget the stream."""
        if self._mark_closed():
            with contextlib.suppress(OSError):
                self.conn.send(A_CLSE, self.local_id, self.remote_id)

    def peer_closed(self) -> None:
        """Host sent CLSE or the connection died: do not answer with a CLSE, just stop the service."""
        if self._mark_closed():
            self.on_peer_close()

    def _mark_closed(self) -> bool:
        with self._cv:
            if self.closed:
                return False
            self.closed = True
            self._cv.notify_all()
        self._acked.set()  # wake a writer blocked on flow control
        self.conn.streams.pop(self.local_id, None)
        return True


class _Connection:
    """One TCP connection from the adb server: a reader thread dispatching messages to streams."""

    def __init__(self, device: LoopbackAdbDevice, sock: socket.socket):
        self.device, self.sock = device, sock
        self.max_payload = MAX_PAYLOAD
        self.dead = False
        self.streams: dict[int, _Stream] = {}
        self._send_lock = threading.Lock()
        self._next_id = 1

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        header = _HEADER.pack(command, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, command ^ 0xFFFFFFFF)
        with self._send_lock:  # one message at a time: the header and payload of two streams must not interleave
            self.sock.sendall(header + data)

    def run(self) -> None:
        rfile = self.sock.makefile("rb")  # buffered: read(n) returns n bytes, or fewer only at EOF
        try:
            while len(header := rfile.read(_HEADER.size)) == _HEADER.size:
                command, arg0, arg1, length, _crc, magic = _HEADER.unpack(header)
                data = rfile.read(length) if length else b""
                if magic != command ^ 0xFFFFFFFF or len(data) != length:
                    break
                self._dispatch(command, arg0, arg1, data)
        except OSError:
            pass
        finally:
            rfile.close()
            self.abort()

    def _dispatch(self, command: int, arg0: int, arg1: int, data: bytes) -> None:
        if command == A_CNXN:
            # A device with auth disabled answers the host's CNXN with its own; no AUTH exchange.
            self.max_payload = min(MAX_PAYLOAD, arg1 or MAX_PAYLOAD)
            self.send(A_CNXN, VERSION, MAX_PAYLOAD, self.device.banner())
        elif command == A_OPEN:
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "surrogateescape"))
        elif command == A_OKAY and arg1 in self.streams:
            self.streams[arg1]._acked.set()
        elif command == A_WRTE and arg1 in self.streams:
            stream = self.streams[arg1]
            stream.feed(data)
            self.send(A_OKAY, stream.local_id, stream.remote_id)  # ack at once; services buffer the rest
        elif command == A_CLSE and arg1 in self.streams:
            self.streams[arg1].peer_closed()

    def _open(self, remote_id: int, service: str) -> None:
        target = self.device.service_for(service)
        if target is None:
            self.send(A_CLSE, 0, remote_id)  # protocol.txt: refusing an OPEN is a CLSE with local-id 0
            return
        local_id, self._next_id = self._next_id, self._next_id + 1
        stream = self.streams[local_id] = _Stream(self, local_id, remote_id)
        self.send(A_OKAY, local_id, remote_id)  # before the service thread can WRTE anything
        threading.Thread(target=self._run_service, args=(target, stream), daemon=True).start()

    @staticmethod
    def _run_service(target, stream: _Stream) -> None:
        try:
            target(stream)
        except (_Closed, EOFError, OSError):
            pass
        finally:
            stream.close()

    def abort(self) -> None:
        """Abrupt close (RST, not FIN), stopping every stream's command."""
        self.dead = True
        for stream in list(self.streams.values()):
            stream.peer_closed()
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RD)  # wakes our reader thread; close() alone would not on Linux
        self.sock.close()
        self.device._forget(self)


class LoopbackAdbDevice:
    """The fake phone: ``with LoopbackAdbDevice() as dev: adb connect dev.serial``."""

    def __init__(
        self,
        port: int = 0,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        props: dict[str, str] | None = None,
        bin_dir: str | None = None,
        unplug_at_sync: bytes | None = None,
    ):
        """``unplug_at_sync=b"STAT"`` (or SEND, RECV) unplugs the phone when that sync request arrives: a cable
        pulled mid-push, on cue rather than by timing."""
        if 5555 <= port <= 5585:
            raise ValueError("ports 5555-5585 make the adb server treat the device as an emulator")
        self.port = port
        self.cwd = cwd
        self.props = {**DEFAULT_PROPS, **(props or {})}
        self._base_env = dict(os.environ if env is None else env)
        self._bin_dir, self._own_bin_dir = bin_dir, bin_dir is None
        self._listener: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._procs: set[subprocess.Popen] = set()  # commands still running
        self._pgids: set[int] = set()  # every process group we started, to reap `nohup x &` leftovers on stop()
        self._lock = threading.Lock()
        self._dropped = False
        self.unplug_at_sync = unplug_at_sync

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def banner(self) -> bytes:
        keys = ("ro.product.name", "ro.product.model", "ro.product.device")
        return ("device::" + "".join(f"{k}={self.props[k]};" for k in keys) + f"features={FEATURES}").encode()

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> LoopbackAdbDevice:
        if self._bin_dir is None:
            self._bin_dir = tempfile.mkdtemp(prefix="edgepipe-adbd-bin-")
        os.makedirs(self._bin_dir, exist_ok=True)
        self._write_getprop()
        self.env = dict(self._base_env)
        self.env["PATH"] = self._bin_dir + os.pathsep + self.env.get("PATH", os.defpath)
        self._listener = self._bind()
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(self._listener,), daemon=True).start()
        return self

    def _bind(self) -> socket.socket:
        candidates = [self.port] if self.port else random.sample(range(6100, 7000), 900)
        for port in candidates:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                if self.port:
                    raise
                continue
            sock.listen(16)
            return sock
        raise OSError("no free port in 6100-6999")

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # listener shut down by stop()/drop()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=conn.run, daemon=True).start()

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
            self._listener.close()
            self._listener = None

    def drop(self) -> None:
        """Simulate a phone unplugged mid-run: close all connections abruptly, kill running commands,
        refuse new connections (the adb server's reconnect attempts are refused too)."""
        self._dropped = True
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # connections first: a command killed first could still report its exit status
            conn.abort()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill(proc.pid)

    def stop(self) -> None:
        """drop(), then also kill background jobs that earlier commands left behind (a test must not leak them)."""
        self.drop()
        with self._lock:
            pgids, self._pgids = self._pgids, set()
        for pgid in pgids:
            _kill(pgid)
        if self._own_bin_dir and self._bin_dir:
            shutil.rmtree(self._bin_dir, ignore_errors=True)
            self._bin_dir = None

    def __enter__(self) -> LoopbackAdbDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    # -- services -----------------------------------------------------------
    def _write_getprop(self) -> None:
        """Real phones answer ``getprop``; adbutils' ``d.prop.model`` / ``d.getprop`` run it via ``shell:``."""

        def q(s: str) -> str:
            return "'" + s.replace("'", "'\\''") + "'"

        listing = "".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items()))
        cases = "".join(f"  {q(k)}) printf '%s\\n' {q(v)} ;;\n" for k, v in sorted(self.props.items()))
        script = (
            "#!/bin/sh\n# Generated by tests/rig/adbd.py: the loopback device's properties.\n"
            f"if [ $# -eq 0 ]; then\n  printf '%s' {q(listing)}\n  exit 0\nfi\n"
            f'case "$1" in\n{cases}  *) printf \'%s\\n\' "${{2-}}" ;;\nesac\n'
        )
        path = os.path.join(self._bin_dir, "getprop")
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, 0o755)

    def service_for(self, name: str):
        """Map an OPEN's service string to a handler, or None (-> CLSE) for unknown services."""
        if name.startswith(("shell:", "shell,")):
            head, _, command = name.partition(":")
            args = head.split(",")[1:]  # e.g. shell,v2,TERM=xterm-256color,raw:CMD (adb 29 sends TERM)
            env = dict(a.split("=", 1) for a in args if a.startswith("TERM="))
            return lambda s: self._serve_command(s, command, v2="v2" in args, extra_env=env)
        if name.startswith("exec:"):
            return lambda s: self._serve_command(s, name[5:], v2=False)
        if name == "sync:":
            return self._serve_sync
        return None

    def _serve_command(self, stream: _Stream, command: str, *, v2: bool, extra_env: dict | None = None) -> None:
        """``shell,v2:`` frames stdout/stderr/exit as packets; ``shell:``/``exec:`` are a raw stream with
        stderr merged into stdout (as real adbd does without the shell protocol) and no exit status."""
        argv = ["/bin/sh", "-c", command] if command else ["/bin/sh"]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if v2 else subprocess.STDOUT,
            cwd=self.cwd,
            env={**self.env, **(extra_env or {})},
            start_new_session=True,
            bufsize=0,
        )
        with self._lock:
            self._procs.add(proc)
            self._pgids.add(proc.pid)
        stream.on_peer_close = lambda: _kill(proc.pid)  # host CLSE (e.g. Ctrl-C on `adb shell`) ends the command
        if self._dropped:
            _kill(proc.pid)
        threading.Thread(target=self._pump_stdin, args=(stream, proc, v2), daemon=True).start()

        def pump(fd: int, packet_id: int) -> None:
            with contextlib.suppress(_Closed, OSError):
                while chunk := os.read(fd, SYNC_DATA_MAX):
                    stream.write(struct.pack("<BI", packet_id, len(chunk)) + chunk if v2 else chunk)

        try:
            err = threading.Thread(target=pump, args=(proc.stderr.fileno(), SH_STDERR), daemon=True) if v2 else None
            if err:
                err.start()
            pump(proc.stdout.fileno(), SH_STDOUT)
            if err:
                err.join()
            code = proc.wait()
            if v2 and not stream.closed:
                status = code if code >= 0 else 128 - code  # killed by signal N -> 128+N, like a shell
                stream.write(struct.pack("<BIB", SH_EXIT, 1, status & 0xFF))
        finally:
            if proc.poll() is None:  # error paths only: `nohup x &` jobs outlive their command, as on a phone
                _kill(proc.pid)
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe:
                    with contextlib.suppress(OSError):
                        pipe.close()
            with self._lock:
                self._procs.discard(proc)

    @staticmethod
    def _pump_stdin(stream: _Stream, proc: subprocess.Popen, v2: bool) -> None:
        """Host -> command stdin, on its own thread so a command that never reads cannot stall the connection."""
        try:
            while True:
                if not v2:
                    data = stream.read_some()
                    if not data:
                        return
                    proc.stdin.write(data)
                    continue
                packet_id, length = struct.unpack("<BI", stream.read_exact(5))
                data = stream.read_exact(length) if length else b""
                if packet_id == SH_STDIN:
                    proc.stdin.write(data)
                elif packet_id == SH_CLOSE_STDIN:
                    proc.stdin.close()  # adb client sends this at stdin EOF (e.g. stdin=/dev/null)
                # SH_WINDOW (terminal resize) is meaningless without a pty: ignored
        except (EOFError, OSError, ValueError):
            pass

    def _serve_sync(self, stream: _Stream) -> None:
        """SYNC.TXT v1: requests are ``ID + u32 length + path``; we answer STAT, LIST, SEND, RECV until QUIT."""

        def fail(message: str) -> None:
            data = message.encode()
            stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)

        while True:
            try:
                request, length = struct.unpack("<4sI", stream.read_exact(8))
            except EOFError:
                return
            if request == b"QUIT":
                return
            path = stream.read_exact(length).decode("utf-8", "surrogateescape")
            if request == self.unplug_at_sync:
                self.drop()
                return
            if request == b"STAT":
                try:
                    st = os.lstat(path)
                    stream.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
                except OSError:
                    stream.write(b"STAT" + bytes(12))  # v1 STAT reports "missing" as all zeros
            elif request == b"LIST":
                for name in [".", "..", *sorted(os.listdir(path))] if os.path.isdir(path) else []:
                    with contextlib.suppress(OSError):
                        st = os.lstat(os.path.join(path, name))
                        raw = name.encode("utf-8", "surrogateescape")
                        stream.write(
                            b"DENT"
                            + struct.pack("<IIII", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw))
                            + raw
                        )
                stream.write(b"DONE" + bytes(16))
            elif request == b"SEND":
                self._sync_send(stream, path, fail)
            elif request == b"RECV":
                try:
                    f = open(path, "rb")  # noqa: SIM115 - streamed in chunks, closed by the sync loop
                except OSError as e:
                    fail(f"open failed: {e.strerror}")
                    continue
                with f:
                    while chunk := f.read(SYNC_DATA_MAX):
                        stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
                stream.write(b"DONE" + bytes(4))
            else:
                fail(f"unknown sync request {request!r}")
                return

    @staticmethod
    def _sync_send(stream: _Stream, spec: str, fail) -> None:
        """SEND "path,mode", DATA chunks, DONE(mtime) -> OKAY/FAIL. On error keep draining to DONE before
        the FAIL: the host only reads the status after it has sent everything (as adbd does)."""
        path, _, mode_text = spec.rpartition(",")
        mode = int(mode_text) if mode_text.isdigit() else stat.S_IFREG | 0o644  # decimal st_mode
        out, error, link_target = None, None, bytearray()
        try:
            if os.path.dirname(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)  # what feature fixed_push_mkdir promises
            if os.path.lexists(path) and not os.path.isdir(path):
                os.unlink(path)  # like adbd: replace rather than truncate in place (ETXTBSY, hard links)
            if not stat.S_ISLNK(mode):
                out = open(path, "wb")  # noqa: SIM115 - written across DATA packets, closed on DONE
        except OSError as e:
            error = f"couldn't create file: {e.strerror}"
        try:
            while True:
                chunk_id, length = struct.unpack("<4sI", stream.read_exact(8))
                if chunk_id == b"DONE":
                    break  # DONE's length field carries the mtime
                if chunk_id != b"DATA":
                    fail(f"unexpected sync chunk {chunk_id!r}")
                    raise EOFError  # the byte stream is out of step: end the sync session
                data = stream.read_exact(length)
                if out is not None and error is None:
                    try:
                        out.write(data)
                    except OSError as e:
                        error = f"write failed: {e.strerror}"
                elif out is None:
                    link_target += data  # a symlink's DATA is its target
        finally:
            if out is not None:
                out.close()
        try:
            if error is None and out is None:
                os.symlink(link_target.decode("utf-8", "surrogateescape"), path)
            elif error is None:
                os.chmod(path, stat.S_IMODE(mode) or 0o644)
                os.utime(path, (length, length))
        except OSError as e:
            error = f"couldn't finish {path}: {e.strerror}"
        if error:
            fail(error)
        else:
            stream.write(b"OKAY" + bytes(4))


# -- a private adb server for tests ---------------------------------------------------------------


class AdbServer:
    """Handle yielded by :func:`adb_server`: run ``adb`` against the private server, connect devices."""

    def __init__(self, port: int, home: str, adb: str = "adb"):
        self.port, self.home, self.adb_path = port, home, adb
        # adb 29 keeps adbkey under $HOME/.android (ANDROID_SDK_HOME wins if set; newer adb: ANDROID_USER_HOME);
        # its log goes to $TMPDIR/adb.$UID.log. Pointing all of them at a temp dir keeps ~/.android clean.
        self.env = {
            **os.environ,
            "HOME": home,
            "ANDROID_SDK_HOME": home,
            "TMPDIR": home,
            "ANDROID_USER_HOME": os.path.join(home, ".android"),
            "ANDROID_ADB_SERVER_PORT": str(port),
        }
        self.env.pop("ADB_VENDOR_KEYS", None)

    def adb(self, *args: str, timeout: float = 30, check: bool = True, **kw) -> subprocess.CompletedProcess:
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)  # else `adb shell` forwards our stdin (shell v2 stdin packets)
        return subprocess.run(
            [self.adb_path, "-P", str(self.port), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            **kw,
        )

    def state(self, serial: str) -> str | None:
        for line in self.adb("devices", check=False).stdout.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return None

    def connect(self, serial: str, timeout: float = 15) -> None:
        """``adb connect`` returns before the CNXN handshake settles; wait until ``adb devices`` says ``device``."""
        deadline = time.monotonic() + timeout
        while True:
            self.adb("connect", serial, check=False)
            end = min(deadline, time.monotonic() + 3)
            while time.monotonic() < end:
                if self.state(serial) == "device":
                    return
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{serial} never became 'device' on adb server :{self.port}")

    def disconnect(self, serial: str) -> None:
        self.adb("disconnect", serial, check=False)


def _free_port(lo: int, hi: int) -> int:
    for port in random.sample(range(lo, hi), hi - lo):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise OSError(f"no free port in {lo}-{hi - 1}")


@contextlib.contextmanager
def adb_server(port: int = 0, *, adb: str = "adb"):
    """Run a private adb server (never the user's :5037) in the foreground so we own its pid, and kill it on exit."""
    port = port or _free_port(5100, 5200)
    home = tempfile.mkdtemp(prefix="edgepipe-adb-home-")
    server = AdbServer(port, home, adb)
    log = open(os.path.join(home, "server.log"), "wb")  # noqa: SIM115 - the server's stdout for its lifetime
    proc = subprocess.Popen(
        [adb, "-P", str(port), "server", "nodaemon"],
        env=server.env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:  # the first start generates an RSA key, which takes a moment
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"adb server on :{port} did not start: {_tail(log.name)}")
            time.sleep(0.05)
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.adb("kill-server", check=False, timeout=5)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill(proc.pid)
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Loopback adbd: `adb connect 127.0.0.1:PORT` reaches this host.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cwd", default=None)
    parser.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    props = dict(p.split("=", 1) for p in args.prop)
    with LoopbackAdbDevice(args.port, cwd=args.cwd, props=props) as device:
        print(f"loopback adbd listening; adb connect {device.serial}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
