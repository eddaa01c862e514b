"""ARM over SSH and Android over adb, for real where this machine allows.

- The ARM board is an arm64 Debian sysroot whose python3 runs under qemu-aarch64
  (tools/rig/arm_board.sh), reached through a real OpenSSH server on 127.0.0.1
  (tests/rig/sshd.py): real SSH, real host-key checks, real aarch64 onnxruntime/LiteRT kernels.
- The Android device is a loopback daemon speaking the ADB wire protocol (tests/rig/adbd.py),
  reached through the real Debian adb server and adbutils; its shell runs the same aarch64
  python. No adbd exists for Linux; a phone cannot be attached here.

Latencies measured under emulation are plumbing checks, not performance numbers, and the
reports label them so. Accuracy is exact: int8 kernels give the same predictions as x86.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import BIN, TINY_RUN, android_of, arm_device, arm_of, run_cli, write_sentiment_csv

pytestmark = pytest.mark.e2e


def edgepipe(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "edgepipe"), *args], capture_output=True, text=True, timeout=timeout)


def run_args(teacher: Path, csv: Path, out: Path, devices: str) -> list[str]:
    """The device run's command line, without how the devices are reached."""
    return [
        "--teacher",
        str(teacher),
        "--data",
        str(csv),
        "--out",
        str(out),
        *TINY_RUN,
        "--set",
        "quantize.targets=[pruned]",
        "--set",
        "bench.models=[pruned]",
        "--set",
        "bench.artifacts=[onnx_int8,tflite_int8]",
        "--set",
        "bench.runs=5",
        "--set",
        "bench.warmup=1",
        "--set",
        "bench.energy.seconds=1",  # energy's own phase, shorter than the default 3 s
        "--devices",
        devices,
    ]


@pytest.fixture(scope="module")
def device_run(tmp_path_factory, tiny_teacher, sshd, phone):
    """One compress-and-export that benchmarks int8 ONNX and TFLite on x86, the ARM board and the phone."""
    _, endpoint = sshd
    server, device, home = phone
    d = tmp_path_factory.mktemp("devrun")
    out = d / "run"
    devices = f"x86,{arm_device(endpoint)},android:{device.serial}"
    args = [
        *run_args(tiny_teacher, write_sentiment_csv(d / "reviews.csv"), out, devices),
        *arm_of(endpoint),
        *android_of(server, home),
    ]
    proc = run_cli(*args, cache=d / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "manifest.json").read_text())


def copy_of(device_run, tmp_path: Path) -> Path:
    """The shared run dir, copied: a test that benchmarks into a run dir writes into its own."""
    out = tmp_path / "run"
    shutil.copytree(device_run[0], out, ignore=shutil.ignore_patterns("run.lock"))
    return out


def _by(manifest, device_prefix):
    return {b["artifact"]: b for b in manifest["benchmarks"] if b["device"].startswith(device_prefix)}


def test_arm_and_android_measure_the_same_accuracy_as_x86(device_run, sshd, phone):
    _, m = device_run
    x86, arm, android = _by(m, "x86"), _by(m, "arm:"), _by(m, "android:")
    assert set(x86) == set(arm) == set(android) == {"onnx_int8", "tflite_int8"}
    for name in x86:
        assert arm[name]["n_eval"] == android[name]["n_eval"] == x86[name]["n_eval"] == 100
        assert arm[name]["accuracy"] == android[name]["accuracy"] == x86[name]["accuracy"], name
        for b in (arm[name], android[name]):
            info = b["device_info"]
            assert info["machine"] == "aarch64" and info["emulated"] == "qemu-user"
            assert b["latency_ms"]["n"] == 5 and 0 < b["latency_ms"]["p50"] <= b["latency_ms"]["p99"]
        assert x86[name]["device_info"]["machine"] == "x86_64" and x86[name]["device_info"]["emulated"] is None
    assert arm["onnx_int8"]["runtime"] == "onnxruntime" and arm["tflite_int8"]["runtime"] == "litert"
    a = android["tflite_int8"]["device_info"]
    assert a["model"] == "edgepipe-loopback" and a["abi"] == "arm64-v8a" and a["method"] == "python runner"
    assert arm["onnx_int8"]["device_info"]["uname"].endswith("aarch64")


def test_rig_rows_carry_conditions_heat_energy_and_android_meminfo(device_run):
    """The board and the phone serve simulated sysfs / dumpsys (tests/rig/fake_sensors.py), labelled so."""
    _, m = device_run
    arm, android, x86 = _by(m, "arm:")["onnx_int8"], _by(m, "android:")["onnx_int8"], _by(m, "x86")["onnx_int8"]
    for row in (arm, android):
        assert row["conditions"]["governors"] == ["schedutil"] and row["conditions"]["sensors"].startswith("simulated")
        assert set(row["conditions"]["cpufreq"]) == {"cpu0", "cpu1"}
        before, after = row["thermal"]["before"], row["thermal"]["after"]
        assert before["zones_c"] and after["max_c"] >= 25.0 and row["thermal"]["throttled"] in (True, False)
        assert after["problems"] == ["unplugged-ntc:2: unreadable ('-274000')"]  # the broken zone, named, left out
        assert row["energy"]["samples"] >= 2 and row["energy"]["mj_per_inference"] > 0
    # the board's INA219 rail: valid while the board is on mains; the phone's battery on USB: kept, invalid
    assert arm["energy"]["source"] == "hwmon ina219 power1_input" and arm["energy"]["valid"] is True
    assert (
        arm["conditions"]["power"]["charging"] is None and arm["conditions"]["screen"] == "not available"
    )  # no supply
    assert android["energy"]["source"].startswith("battery") and android["energy"]["valid"] is False
    assert "USB-powered" in android["energy"]["reason"] and android["conditions"]["power"]["charging"] is True
    assert android["conditions"]["screen"] == "on" and android["thermal"]["after"]["android"]["status"] in (0, 1)
    meminfo = android["memory"]["dumpsys_meminfo"]
    assert meminfo["total_pss_mb"] > 1 and meminfo["source"].startswith("dumpsys meminfo ")
    assert x86["conditions"]["sensors"] == "device" and "dumpsys_meminfo" not in x86["memory"]


def test_cool_down_and_throttled_flag_on_the_board(device_run, sshd, board_sensors, tmp_path):
    """A board still hot from earlier work is waited for; a run that warms it past the margin is flagged,
    with a one-line warning, and its numbers are kept."""
    out = copy_of(device_run, tmp_path)
    _, endpoint = sshd
    board_sensors.heat_to(55.0, hold=True)  # until the runner is on the board (ssh, uploads: seconds)
    proc = edgepipe(
        "bench", str(out), "--device", arm_device(endpoint), "--runs", "20", "--warmup", "0",
        "--artifacts", "onnx_int8", "--cool-below", "40",
        "--set", "bench.thermal.warm_margin_c=0.5", "--set", "bench.accuracy=false", *arm_of(endpoint),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = next(b for b in json.loads((out / "manifest.json").read_text())["benchmarks"] if b["latency_ms"]["n"] == 20)
    cool = row["thermal"]["cool_down"]
    assert cool["threshold_c"] == 40.0 and cool["start_c"] >= 40.0 and cool["reached"] is True
    assert cool["end_c"] < 40.0 and cool["waited_s"] > 0.5
    assert row["thermal"]["throttled"] is True and row["thermal"]["warmed_c"] > 0.5
    said = " ".join(proc.stderr.split())  # the console wraps long lines at its width
    assert said.count("measured hot") == 1 and "warning: pruned onnx_int8 on arm:" in said
    assert "measured hot, flagged in the manifest: " in said and "warmed by" in said


def test_a_phone_without_python_is_read_over_adb_and_cooled_down(phone, phone_sensors):
    """The benchmark_model path's conditions and heat: one adb shell command, parsed by the runner's code."""
    from edgepipe.config import AndroidConfig
    from edgepipe.device_spec import parse_device
    from edgepipe.devices.android import AdbTransport, BenchmarkModelDevice
    from edgepipe.devices.standalone import sensors

    server, device, home = phone
    spec = parse_device(f"android:{device.serial}")
    transport = AdbTransport(spec, AndroidConfig(adb_port=server.port))
    phone_dev = BenchmarkModelDevice(spec, transport, Path("/bin/true"), 60, {})
    conditions, snapshot = phone_dev.state()
    assert conditions["governors"] == ["schedutil"] and conditions["power"]["charging"] is True
    assert conditions["screen"] == "on" and conditions["sensors"].startswith("simulated")
    assert snapshot["android"]["status"] in (0, 1) and set(snapshot["zones_c"]) == {"cpu-thermal:0", "soc-thermal:1"}
    phone_sensors.heat_to(60.0)
    cool = sensors.cool_down(45.0, 60.0, poll_s=0.5, snapshot=lambda: phone_dev.state()[1])
    assert cool["start_c"] >= 45.0 and cool["reached"] is True and cool["end_c"] < 45.0


def test_remote_work_dirs_are_cleaned_up(device_run, phone):
    _, _, home = phone
    assert list((home / "data/local/tmp/edgepipe").iterdir()) == []


def test_bench_command_adds_a_thread_setting_and_hostile_names_stay_names(device_run, sshd, tmp_path):
    out = copy_of(device_run, tmp_path)
    _, endpoint = sshd
    proc = edgepipe(
        "bench",
        str(out),
        "--device",
        arm_device(endpoint),
        "--bench-threads",
        "2",
        "--runs",
        "3",
        "--warmup",
        "0",
        "--artifacts",
        "onnx_int8",
        *arm_of(endpoint),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    arm = [b for b in m["benchmarks"] if b["device"].startswith("arm:") and b["artifact"] == "onnx_int8"]
    assert sorted(b["threads"] for b in arm) == [1, 2]

    hostile = tmp_path / "we ird" / "m'; touch PWNED; echo $(touch PWNED2) `touch PWNED3`.onnx"
    hostile.parent.mkdir()
    shutil.copy(out / "onnx" / "pruned.int8.onnx", hostile)
    proc = edgepipe(
        "bench",
        str(hostile),
        "--inputs",
        str(out / "data" / "test_pruned"),
        "--device",
        arm_device(endpoint),
        "--runs",
        "2",
        "--warmup",
        "0",
        "--max-eval",
        "20",
        *arm_of(endpoint),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"n_eval": 20' in proc.stdout
    leaked = [p for base in (Path.home(), Path("/tmp"), tmp_path) for p in base.glob("PWNED*")]
    assert leaked == []


def test_host_key_mismatch_unknown_host_and_unreachable_board_are_one_line(device_run, sshd, tmp_path):
    out = copy_of(device_run, tmp_path)
    _, endpoint = sshd
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong.write_text(f"[{endpoint.host}]:{endpoint.port} {other[0]} {other[1]}\n")
    base = [
        "bench",
        str(out),
        "--device",
        arm_device(endpoint),
        "--runs",
        "1",
        "--bench-threads",
        "4",
        "--artifacts",
        "onnx_int8",
        "--set",
        f"bench.ssh.identity_file={endpoint.key_path}",
    ]

    proc = edgepipe(*base, "--set", f"bench.ssh.known_hosts={wrong}")
    assert proc.returncode == 6 and "does NOT match" in proc.stderr and "Traceback" not in proc.stderr

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = edgepipe(*base, "--set", f"bench.ssh.known_hosts={empty}")
    assert proc.returncode == 6 and "is not in" in proc.stderr and "ssh-keyscan" in proc.stderr

    proc = edgepipe(
        *base, "--set", f"bench.ssh.known_hosts={empty}", "--set", "bench.ssh.insecure_skip_host_key_check=true"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]

    closed = [
        "bench",
        str(out),
        "--device",
        f"arm:{endpoint.user}@127.0.0.1:1",
        "--artifacts",
        "onnx_int8",
        *arm_of(endpoint),
    ]
    proc = edgepipe(*closed, "--set", "bench.ssh.connect_timeout_s=3")
    assert proc.returncode == 6 and "cannot reach 127.0.0.1:1" in proc.stderr


def test_wrong_key_is_refused_and_no_secret_reaches_the_run_dir(device_run, sshd, tmp_path):
    out = copy_of(device_run, tmp_path)
    _, endpoint = sshd
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    proc = edgepipe(
        "bench",
        str(out),
        "--device",
        arm_device(endpoint),
        "--artifacts",
        "onnx_int8",
        "--runs",
        "1",
        "--bench-threads",
        "6",
        "--set",
        f"bench.ssh.identity_file={tmp_path / 'stranger'}",
        "--set",
        f"bench.ssh.known_hosts={endpoint.known_hosts}",
    )
    assert (
        proc.returncode == 6 and "SSH authentication as 'root' failed" in proc.stderr and "Traceback" not in proc.stderr
    )
    secret_lines = [ln for ln in endpoint.key_path.read_text().splitlines() if ln and not ln.startswith("-----")]
    for f in [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".html", ".yaml")]:
        text = f.read_text(errors="replace")
        assert not any(line in text for line in secret_lines), f"private key material in {f}"


def _kill_when(predicate, action, timeout=120):
    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                action()
                return
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def _entries(out: Path, device: str, threads: int) -> set[str]:
    try:
        m = json.loads((out / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    return {b["artifact"] for b in m["benchmarks"] if b["device"] == device and b["threads"] == threads}


def test_board_that_dies_mid_run_keeps_finished_results(device_run, board, tmp_path):
    from rig.sshd import LoopbackSshd

    out = copy_of(device_run, tmp_path)
    server = LoopbackSshd(tmp_path / "sshd2", path_prepend=[board / "bin"])
    endpoint = server.start()
    try:
        dev = arm_device(endpoint)
        # enough runs that the second artifact is still running when the first one has landed
        watcher = _kill_when(lambda: "onnx_int8" in _entries(out, dev, 1), server.kill)
        proc = edgepipe(
            "bench", str(out), "--device", dev, "--runs", "400", "--warmup", "0", *arm_of(endpoint), timeout=300
        )
        watcher.join(timeout=1)
        assert proc.returncode == 6, proc.stderr[-2000:]
        assert "finished results are kept, rerun to resume" in proc.stderr and "Traceback" not in proc.stderr
        assert _entries(out, dev, 1) == {"onnx_int8"}  # kept, and the manifest is whole JSON
    finally:
        server.stop()


def test_phone_unplugged_mid_run_keeps_finished_results(device_run, board, phone, tmp_path):
    from rig.adbd import LoopbackAdbDevice

    out = copy_of(device_run, tmp_path)
    server, _, _ = phone
    home = tmp_path / "phone2"
    home.mkdir()
    with LoopbackAdbDevice(
        env={"PATH": f"{board / 'bin'}:/usr/bin:/bin", "HOME": str(home)}, cwd=str(home)
    ) as device:  # its own phone, unplugged below
        server.connect(device.serial)
        dev = f"android:{device.serial}"
        assert _entries(out, dev, 3) == set()
        watcher = _kill_when(lambda: "onnx_int8" in _entries(out, dev, 3), device.drop)
        proc = edgepipe(
            "bench",
            str(out),
            "--device",
            dev,
            "--bench-threads",
            "3",
            "--runs",
            "400",
            "--warmup",
            "0",
            *android_of(server, home),
            timeout=300,
        )
        watcher.join(timeout=1)
    assert proc.returncode == 6, proc.stderr[-2000:]
    assert "finished results are kept, rerun to resume" in proc.stderr and "Traceback" not in proc.stderr
    assert _entries(out, dev, 3) == {"onnx_int8"}


def test_adb_with_no_device_or_two_devices_and_no_serial(device_run, board, tmp_path):
    from rig.adbd import LoopbackAdbDevice, adb_server

    out = copy_of(device_run, tmp_path)
    base = ["bench", str(out), "--device", "android", "--artifacts", "onnx_int8", "--runs", "1"]
    with adb_server() as server:
        proc = edgepipe(*base, "--set", f"bench.android.adb_port={server.port}")
        assert proc.returncode == 6 and "no device is connected" in proc.stderr
        env = {"PATH": f"{board / 'bin'}:/usr/bin:/bin"}
        with LoopbackAdbDevice(env=env) as a, LoopbackAdbDevice(env=env) as b:
            server.connect(a.serial)
            server.connect(b.serial)
            proc = edgepipe(*base, "--set", f"bench.android.adb_port={server.port}")
            assert proc.returncode == 6 and "2 devices are connected" in proc.stderr and "android:SERIAL" in proc.stderr
    proc = edgepipe(*base, "--set", "bench.android.adb_port=1")
    assert proc.returncode == 6 and "no adb server" in proc.stderr


def test_missing_runtime_on_the_board_is_named(device_run, sshd, tmp_path):
    """A board whose python lacks onnxruntime: the runner's own message comes back as one line."""
    out = copy_of(device_run, tmp_path)
    _, endpoint = sshd
    (tmp_path / "shadow").mkdir()
    (tmp_path / "shadow" / "onnxruntime.py").write_text(
        "raise ImportError('simulated: onnxruntime is not installed')\n"
    )
    python = tmp_path / "python without ort"
    python.write_text(f"#!/bin/sh\nPYTHONPATH='{tmp_path / 'shadow'}' exec python3 \"$@\"\n")
    python.chmod(0o755)
    proc = edgepipe(
        "bench",
        str(out),
        "--device",
        arm_device(endpoint),
        "--artifacts",
        "onnx_int8",
        "--runs",
        "1",
        "--bench-threads",
        "5",
        "--set",
        f"bench.ssh.python={python}",
        *arm_of(endpoint),
    )
    assert proc.returncode == 6 and "Traceback" not in proc.stderr, proc.stderr
    assert "onnxruntime is not installed on this device; install it with `pip install onnxruntime`" in proc.stderr


def test_pte_on_a_board_without_executorch_is_refused_in_one_line(device_run, sshd, tmp_path):
    """The plain emulated board has no ExecuTorch (the `--executorch` board, 3.3 GB larger, has: see
    test_executorch.py): the runner on the board names what a .pte needs."""
    from edgepipe.config import AndroidConfig, SshConfig
    from edgepipe.devices.pool import open_device
    from edgepipe.errors import DeviceError
    from edgepipe.measurement import Measurement

    out, _ = device_run
    program = tmp_path / "program.pte"
    program.write_bytes(b"\x00" * 64)  # the runner stops at the missing runtime, before reading the file
    _, endpoint = sshd
    ssh = SshConfig(identity_file=endpoint.key_path, known_hosts=endpoint.known_hosts)
    board = open_device(arm_device(endpoint), ssh, AndroidConfig())
    try:
        with pytest.raises(DeviceError) as e:
            board.benchmark(program, out / "data" / "test_pruned", Measurement(runs=1, warmup=0))
    finally:
        board.close()
    assert "executorch is not installed on this device; .pte models need torch and the ExecuTorch runtime" in str(
        e.value
    ) and "\n" not in str(e.value)


def test_rerun_reuses_device_results_without_dialing_the_devices(device_run, tiny_teacher, sshd, phone, tmp_path):
    """Finished device benchmarks are stages like any other: a resumed run never dials the devices again.
    The rerun's connection settings lead nowhere (a missing key, no adb server): dialing would fail it."""
    _, endpoint = sshd
    _, device, _ = phone
    m = device_run[1]
    out = copy_of(device_run, tmp_path)
    devices = f"x86,{arm_device(endpoint)},android:{device.serial}"
    nowhere = ["--set", f"bench.ssh.identity_file={tmp_path / 'no-such-key'}", "--set", "bench.android.adb_port=1"]
    args = [
        *run_args(tiny_teacher, Path(m["dataset"]["source"]), out, devices),
        *nowhere,
        "--cache-dir",
        str(device_run[0].parent / "cache"),
    ]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = json.loads((out / "manifest.json").read_text())
    assert all(t["reused"] for name, t in again["timings"].items() if name.startswith("bench_"))
    key = lambda b: (b["device"], b["artifact"], b["threads"])  # noqa: E731
    first = {key(b): b["accuracy"] for b in m["benchmarks"]}
    assert {k: v for k, v in ((key(b), b["accuracy"]) for b in again["benchmarks"]) if k in first} == first


def test_fleet_benchmarks_devices_concurrently_and_a_dead_board_stops_only_itself(device_run, board, phone, tmp_path):
    """Two emulated boards (two sshd, each with its own key) and a phone from one fleet file, side by side;
    the second board is killed once its first result lands, the others finish."""
    import yaml
    from rig.adbd import LoopbackAdbDevice
    from rig.sshd import LoopbackSshd

    out = copy_of(device_run, tmp_path)
    server, _, _ = phone
    home = tmp_path / "phone2"
    home.mkdir()
    board1, board2 = (
        LoopbackSshd(tmp_path / "sshd1", path_prepend=[board / "bin"]),
        LoopbackSshd(tmp_path / "sshd2", path_prepend=[board / "bin"]),
    )
    ep1, ep2 = board1.start(), board2.start()
    handset = LoopbackAdbDevice(
        env={"PATH": f"{board / 'bin'}:/usr/bin:/bin", "HOME": str(home)}, cwd=str(home)
    ).start()
    try:
        server.connect(handset.serial)
        dev1, dev2, phone_dev = arm_device(ep1), arm_device(ep2), f"android:{handset.serial}"
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(
            yaml.safe_dump(
                {
                    "devices": [
                        {
                            "device": dev1,
                            "tags": {"board": "board-1", "soc": "qemu-cortex-a76"},
                            "ssh": {"identity_file": str(ep1.key_path), "known_hosts": str(ep1.known_hosts)},
                        },
                        {
                            "device": dev2,
                            "tags": {"board": "board-2"},
                            "ssh": {"identity_file": str(ep2.key_path), "known_hosts": str(ep2.known_hosts)},
                        },
                        {
                            "device": phone_dev,
                            "tags": {"abi": "arm64-v8a"},
                            "android": {"adb_port": server.port, "remote_dir": f"{home}/data/local/tmp/edgepipe"},
                        },
                    ]
                }
            )
        )
        watcher = _kill_when(lambda: "onnx_int8" in _entries(out, dev2, 4), board2.kill, timeout=300)
        proc = edgepipe(
            "bench",
            str(out),
            "--fleet",
            str(fleet),
            "--bench-threads",
            "4",
            "--runs",
            "300",
            "--warmup",
            "0",
            "--artifacts",
            "onnx_int8,tflite_int8",
            timeout=600,
        )
        watcher.join(timeout=1)
    finally:
        board1.stop()
        board2.stop()
        handset.stop()
    assert proc.returncode == 6, proc.stderr[-2000:]
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert (
        len(err) == 1
        and err[0].startswith(f"error (device): {dev2}")
        and err[0].endswith(f"{dev1}, {phone_dev} finished")
    ), err
    assert "Traceback" not in proc.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert _entries(out, dev1, 4) == _entries(out, phone_dev, 4) == {"onnx_int8", "tflite_int8"}
    assert _entries(out, dev2, 4) == {"onnx_int8"}  # landed before the board died
    tags = {b["device"]: b["device_info"].get("tags") for b in m["benchmarks"] if b["threads"] == 4}
    assert tags == {
        dev1: {"board": "board-1", "soc": "qemu-cortex-a76"},
        dev2: {"board": "board-2"},
        phone_dev: {"abi": "arm64-v8a"},
    }
    s = m["device_sessions"]
    assert s["parallel"] and [s["devices"][d]["ok"] for d in (dev1, dev2, phone_dev)] == [True, False, True]
    busy = sum(d["seconds"] for d in s["devices"].values())
    assert s["wall_s"] < 0.75 * busy, s  # side by side, not one after another
    assert (out / "report.html").is_file()


def test_a_device_in_use_by_another_run_is_waited_for_then_given_up_on(device_run, tmp_path):
    out = copy_of(device_run, tmp_path)
    locks = tmp_path / "locks"
    hold = (
        "import sys, time; from edgepipe.devices.lock import DeviceLock; "
        "l = DeviceLock('x86', sys.argv[1]).acquire(); print('held', flush=True); time.sleep(float(sys.argv[2]))"
    )

    def holder(seconds: float) -> subprocess.Popen:
        p = subprocess.Popen(
            [str(BIN / "python"), "-c", hold, str(locks), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout.readline().strip() == "held"
        return p

    # the holder keeps the device until edgepipe says it waits for it (no race with a slow start-up)
    h = holder(600)
    bench = subprocess.Popen(
        [
            str(BIN / "edgepipe"),
            "bench",
            str(out),
            "--device",
            "x86",
            "--bench-threads",
            "5",
            "--runs",
            "3",
            "--artifacts",
            "onnx_int8",
            "--set",
            f"bench.lock_dir={locks}",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    seen = []
    try:
        for line in bench.stderr:
            seen.append(line)
            if "waiting for x86" in line:
                break
        assert f"waiting for x86: in use by pid {h.pid}" in "".join(seen), "".join(seen)[-2000:]
        h.kill()
        h.wait()
        seen.append(bench.stderr.read())
        assert bench.wait(timeout=600) == 0, "".join(seen)[-2000:]
    finally:
        h.kill()
        bench.kill()
    h = holder(30)
    try:
        proc = edgepipe(
            "bench",
            str(out),
            "--device",
            "x86",
            "--bench-threads",
            "6",
            "--runs",
            "3",
            "--artifacts",
            "onnx_int8",
            "--set",
            f"bench.lock_dir={locks}",
            "--set",
            "bench.device_lock_timeout_s=1",
        )
    finally:
        h.kill()
    assert proc.returncode == 6
    assert (
        f"error (device): x86 is in use by pid {h.pid} (-c" in proc.stderr
        and "raise bench.device_lock_timeout_s" in proc.stderr
    )
