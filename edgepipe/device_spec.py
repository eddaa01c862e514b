"""Device strings as users type them: `x86`, `arm:USER@HOST[:PORT]`, `android[:SERIAL]`.

Core, not devices/: the config validates device strings, and the device transports build on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("x86", "arm", "android")
_ARM = re.compile(r"^(?P<user>[A-Za-z0-9._-]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{1,5}))?$")
_SERIAL = re.compile(r"^[A-Za-z0-9._:@-]+$")


@dataclass(frozen=True)
class DeviceSpec:
    kind: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None

    @property
    def text(self) -> str:
        if self.kind == "arm":
            host = f"[{self.host}]" if ":" in (self.host or "") else self.host
            return f"arm:{self.user}@{host}" + (f":{self.port}" if self.port else "")
        if self.kind == "android":
            return "android" + (f":{self.serial}" if self.serial else "")
        return self.kind

    @property
    def slug(self) -> str:
        """A file-name-safe form for stage records (`arm-pi@board-2222`)."""
        return re.sub(r"[^A-Za-z0-9.@_-]+", "-", self.text)


def parse_device(text: str) -> DeviceSpec:
    """Raises ValueError with the accepted forms: inside a pydantic validator it becomes the
    config's one-line ConfigError naming the key."""
    kind, _, rest = text.strip().partition(":")
    if kind == "x86" and not rest:
        return DeviceSpec("x86")
    if kind == "arm":
        m = _ARM.match(rest)
        if not m:
            raise ValueError(f"device {text!r}: expected arm:USER@HOST or arm:USER@HOST:PORT")
        port = int(m["port"]) if m["port"] else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"device {text!r}: port {port} is outside 1-65535")
        return DeviceSpec("arm", user=m["user"], host=m["host"].strip("[]"), port=port)
    if kind == "android":
        if rest and not _SERIAL.match(rest):
            raise ValueError(
                f"device {text!r}: the serial may hold letters, digits and . _ : @ - only (see `adb devices`)"
            )
        return DeviceSpec("android", serial=rest or None)
    raise ValueError(f"unknown device {text!r}; use x86, arm:USER@HOST[:PORT] or android[:SERIAL]")
