"""Start the emulated test devices and keep them up: N arm64 boards behind real sshd on 127.0.0.1
and optionally one loopback adb phone. Writes a fleet file for `--fleet` and waits for Ctrl-C.

    .venv/bin/python tools/rig/serve.py --boards 2 --phone --fleet /tmp/fleet.yaml

For measuring and demonstrating edgepipe's device plumbing without hardware; latencies under
qemu are not performance numbers, and the devices' thermal zones, power rail, battery and dumpsys
are simulated (tests/rig/fake_sensors.py: they heat while a runner works), labelled so in every result. Needs tools/rig/arm_board.sh's sysroot (built on first use).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from rig.adbd import LoopbackAdbDevice, adb_server  # noqa: E402
from rig.fake_sensors import SensorModel, SimulatedSensors  # noqa: E402
from rig.sshd import LoopbackSshd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", type=int, default=1)
    ap.add_argument("--phone", action="store_true")
    ap.add_argument("--fleet", type=Path, required=True, help="fleet YAML to write")
    ap.add_argument("--executorch", action="store_true", help="boards with torch + executorch (runs .pte; +3.3 GB)")
    args = ap.parse_args()
    rig = Path(os.environ.get("EDGEPIPE_RIG_DIR", Path.home() / ".cache" / "edgepipe" / "rig"))
    board = rig / ("arm64-executorch" if args.executorch else "arm64")
    extra = ["--executorch"] if args.executorch else []
    subprocess.run(["bash", str(ROOT / "tools" / "rig" / "arm_board.sh"), *extra, str(board)], check=True)
    work = Path(tempfile.mkdtemp(prefix="edgepipe-rig-"))
    with contextlib.ExitStack() as stack:
        entries = []
        for i in range(args.boards):
            sensors = stack.enter_context(SimulatedSensors(work / f"board{i}-sys", SensorModel(battery=False)))
            server = LoopbackSshd(
                work / f"sshd{i}", path_prepend=[board / "bin"], env={"EDGEPIPE_SENSORS_ROOT": str(sensors.root)}
            )
            ep = server.start()
            stack.callback(server.stop)
            entries.append(
                {
                    "device": f"arm:{ep.user}@{ep.host}:{ep.port}",
                    "tags": {"board": f"emulated-{i}", "soc": "qemu-cortex-a76"},
                    "ssh": {"identity_file": str(ep.key_path), "known_hosts": str(ep.known_hosts)},
                }
            )
        if args.phone:
            adb = stack.enter_context(adb_server())
            home = work / "phone"
            home.mkdir()
            sensors = stack.enter_context(SimulatedSensors(work / "phone-sys", SensorModel(charging=True)))
            tools = sensors.write_dumpsys(work / "phone-bin").parent
            env = {"PATH": f"{tools}:{board / 'bin'}:/usr/bin:/bin", "HOME": str(home)}
            phone = stack.enter_context(
                LoopbackAdbDevice(env=env | {"EDGEPIPE_SENSORS_ROOT": str(sensors.root)}, cwd=str(home))
            )
            adb.connect(phone.serial)
            entries.append(
                {
                    "device": f"android:{phone.serial}",
                    "tags": {"abi": "arm64-v8a"},
                    "android": {"adb_port": adb.port, "remote_dir": f"{home}/data/local/tmp/edgepipe"},
                }
            )
        args.fleet.write_text(yaml.safe_dump({"devices": entries}, sort_keys=False))
        print(f"fleet of {len(entries)} written to {args.fleet}; Ctrl-C stops it", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the devices as cleanly as Ctrl-C
    main()
