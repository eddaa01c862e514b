"""The runner's sensors (devices/standalone/sensors.py): what a device says about its conditions, heat and
energy, read from a sysfs tree, and "not available" wherever it says nothing usable.

Trees here are written by hand (a board, a phone, a broken sensor) or by the rig's simulator
(tests/rig/fake_sensors.py), which heats while a runner works and cools after; on this machine's own
/proc and /sys the same code reads the real files (a VM: no thermal zones, no cpufreq, no battery)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgepipe.devices.remote import RUNNER
from edgepipe.devices.standalone import sensors
from edgepipe.measurement import Measured

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools" / "rig"))
from rig.fake_sensors import SensorModel, SimulatedSensors
from tiny_models import eval_set, tiny_classifier


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "sys" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_SENSORS_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no dumpsys: not a phone
    return tmp_path


def test_a_device_without_sensors_reads_not_available_never_a_number(sysfs):
    cond = sensors.conditions()
    assert cond["cpufreq"].startswith("not available") and cond["governors"] == "not available"
    assert cond["power"]["charging"] is None and cond["power"]["source"].startswith("not available")
    assert cond["screen"] == "not available" and isinstance(cond["load_avg"], list)
    snap = sensors.thermal_snapshot()
    assert snap["zones_c"] == {} and snap["max_c"].startswith("not available")
    assert sensors.power_source() is None
    verdict = sensors.thermal_verdict(snap, snap, 5.0)
    assert verdict["throttled"] is None and verdict["warmed_c"] == "not available"
    cool = sensors.cool_down(40.0, 5.0)
    assert cool["reached"] is None and cool["waited_s"] == 0.0


def test_garbage_readings_are_named_and_left_out(sysfs):
    tree(
        sysfs,
        {
            "class/thermal/thermal_zone0/type": "cpu-thermal",
            "class/thermal/thermal_zone0/temp": "47250",
            "class/thermal/thermal_zone1/type": "gpu-thermal",
            "class/thermal/thermal_zone1/temp": "hello",
            "class/thermal/thermal_zone2/type": "ntc",
            "class/thermal/thermal_zone2/temp": "-274000",
            "class/power_supply/battery/type": "Battery",
            "class/power_supply/battery/current_now": "n/a",
            "class/power_supply/battery/voltage_now": "3900000",
            "devices/system/cpu/cpu0/cpufreq/scaling_governor": "performance",
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "99999999999",
        },
    )
    temps, _, problems = sensors.thermal_zones()
    assert temps == {"cpu-thermal:0": 47.2} or temps == {"cpu-thermal:0": 47.3}
    assert problems == ["gpu-thermal:1: unreadable ('hello')", "ntc:2: unreadable ('-274000')"]
    assert sensors.power_source() is None  # current_now is garbage: no energy figure at all
    freqs = sensors.cpu_frequencies([0])
    assert freqs == {"cpu0": {"governor": "performance"}}  # 100 THz is not a frequency


def test_board_conditions_and_thermal_trip_points(sysfs):
    tree(
        sysfs,
        {
            "class/thermal/thermal_zone0/type": "cpu-thermal",
            "class/thermal/thermal_zone0/temp": "71000",
            "class/thermal/thermal_zone0/trip_point_0_type": "passive",
            "class/thermal/thermal_zone0/trip_point_0_temp": "70000",
            "class/thermal/thermal_zone0/trip_point_1_type": "critical",
            "class/thermal/thermal_zone0/trip_point_1_temp": "95000",
            "devices/system/cpu/cpu0/cpufreq/scaling_governor": "ondemand",
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "1500000",
            "devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "2400000",
            "class/hwmon/hwmon0/name": "ina219",
            "class/hwmon/hwmon0/power1_input": "2500000",
            "class/backlight/panel/bl_power": "4",
        },
    )
    cond = sensors.conditions()
    assert cond["cpufreq"]["cpu0"] == {"governor": "ondemand", "cur_mhz": 1500.0, "max_mhz": 2400.0}
    assert cond["governors"] == ["ondemand"] and cond["screen"] == "off"
    snap = sensors.thermal_snapshot()
    assert snap["passive_trip_c"] == {"cpu-thermal:0": 70.0} and snap["max_c"] == 71.0
    cool = {"zones_c": {"cpu-thermal:0": 60.0}, "passive_trip_c": {"cpu-thermal:0": 70.0}, "max_c": 60.0}
    verdict = sensors.thermal_verdict(cool, snap, 20.0)
    assert verdict["throttled"] is True and verdict["warmed_c"] == 11.0
    assert verdict["reasons"] == ["cpu-thermal:0 at 71.0 C, at or above its passive trip point 70.0 C"]
    source, read = sensors.power_source()
    assert source == "hwmon ina219 power1_input" and read() == pytest.approx(2.5)


def test_thermal_verdict_reasons_one_by_one():
    def snap(c, **kw):
        return {"zones_c": {"cpu:0": c}, "passive_trip_c": {}, "max_c": c} | kw

    assert sensors.thermal_verdict(snap(40.0), snap(44.9), 5.0) == {
        "throttled": False,
        "reasons": [],
        "warmed_c": 4.9,
        "warm_margin_c": 5.0,
    }
    assert sensors.thermal_verdict(snap(40.0), snap(45.2), 5.0)["reasons"] == ["warmed by 5.2 C (margin 5.0 C)"]
    x86 = sensors.thermal_verdict(snap(40.0, throttle_events=10), snap(41.0, throttle_events=13), 5.0)
    assert x86["throttled"] and x86["reasons"] == ["3 CPU throttle events during the run"]
    android = {"status": 2, "status_name": "moderate", "hal_c": {}}
    phone = sensors.thermal_verdict(snap(40.0), snap(41.0, android=android), 5.0)
    assert phone["reasons"] == ["Android thermal status 2 (moderate)"]


class Recorded(sensors.PowerSampler):
    """A sampler holding given readings: the arithmetic, not the thread."""

    def __init__(self, watts: list[float], bad: int = 0):
        super().__init__(lambda: None, 10.0)
        self.samples = [(0.1 * i, w) for i, w in enumerate(watts)]
        self.bad = bad


def test_energy_arithmetic_against_hand_computed_values():
    # 2.0 W for 3 s of timed runs over 300 inferences: 2.0 * 3 / 300 = 20 mJ each; idle 0.5 W: 15 mJ above idle
    run, idle = Recorded([1.5, 2.0, 2.5]), Recorded([0.5, 0.5])
    e = sensors.energy_report("hwmon ina219 power1_input", 10.0, run, idle, 3.0, 300, None, False)
    assert e["mj_per_inference"] == pytest.approx(20.0) and e["mj_per_inference_above_idle"] == pytest.approx(15.0)
    assert e["mean_power_mw"] == pytest.approx(2000.0) and e["idle_power_mw"] == pytest.approx(500.0)
    assert e["sample_hz_achieved"] == pytest.approx(10.0) and e["samples"] == 3 and e["valid"] is True
    # the same readings off a battery while USB-powered: kept, marked invalid, unless an external meter powers it
    plugged = sensors.energy_report("battery battery current_now x voltage_now", 10.0, run, idle, 3.0, 300, True, False)
    assert plugged["valid"] is False and "charging or USB-powered" in plugged["reason"]
    assert plugged["mj_per_inference"] == pytest.approx(20.0)
    metered = sensors.energy_report("battery battery current_now x voltage_now", 10.0, run, idle, 3.0, 300, True, True)
    assert metered["valid"] is True
    unplugged = sensors.energy_report("battery b current_now x voltage_now", 10.0, run, None, 3.0, 300, False, False)
    assert unplugged["valid"] is True and "mj_per_inference_above_idle" not in unplugged
    short = sensors.energy_report("hwmon x", 10.0, Recorded([2.0], bad=2), None, 0.05, 100, False, False)
    assert (
        short["valid"] is False and "raise bench.energy.seconds" in short["reason"] and "mj_per_inference" not in short
    )
    assert short["unreadable_samples"] == 2
    # battery units: |current| (uA, negative while discharging on some vendors) x voltage (uV)
    assert sensors._battery_watts(-500_000, 4_000_000) == pytest.approx(2.0)
    assert sensors._battery_watts(500_000, 0) is None


def test_android_dumpsys_formats_are_parsed(monkeypatch, tmp_path):
    """Thermal status and HAL temperatures as Android 12 prints them; meminfo of a real process."""
    with SimulatedSensors(tmp_path / "phone", SensorModel(trip_c=45.0)) as sim:
        sim.write_dumpsys(tmp_path / "bin")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
        monkeypatch.setenv("EDGEPIPE_SENSORS_ROOT", str(tmp_path / "phone"))
        sim.heat_to(50.0)
        thermal = sensors.android_thermal()
        assert thermal["status"] == 1 and thermal["status_name"] == "light"
        assert thermal["hal_c"]["CPU"] == pytest.approx(50.0, abs=0.01) and "USB" not in thermal["hal_c"]  # 0.0: unset
        memory = sensors.dumpsys_meminfo(os.getpid())
        own = {}
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.split()[0] in ("Pss:", "Rss:"):
                own[line.split()[0]] = int(line.split()[1]) / 1024
        assert memory["source"] == f"dumpsys meminfo {os.getpid()}"
        assert memory["total_pss_mb"] == pytest.approx(own["Pss:"], rel=0.2)
        assert memory["total_rss_mb"] == pytest.approx(own["Rss:"], rel=0.2)
        assert sensors.screen_state() == "on"
    monkeypatch.setattr(sensors, "dumpsys", lambda *a, **k: "** MEMINFO in pid 7 [x] **\n   TOTAL    20480   1  2\n")
    assert sensors.dumpsys_meminfo(7)["total_pss_mb"] == 20.0  # Android < 10: the table's TOTAL row


def test_cool_down_waits_for_a_hot_device_and_gives_up_in_time(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPIPE_SENSORS_ROOT", str(tmp_path))
    with SimulatedSensors(tmp_path, SensorModel(ambient_c=30.0, cool_tau_s=1.0)) as sim:
        sim.heat_to(60.0)
        cool = sensors.cool_down(40.0, 30.0, poll_s=0.1)
        # 30 + 30 exp(-t/1) < 40 after ln(3) = 1.1 s
        assert cool["reached"] is True and cool["start_c"] >= 59.0 and cool["end_c"] < 40.0
        assert 0.8 < cool["waited_s"] < 10.0
        t0 = time.monotonic()
        never = sensors.cool_down(20.0, 0.5, poll_s=0.1)  # below the room's 30 C: cannot be reached
        assert never["reached"] is False and never["end_c"] >= 29.0 and time.monotonic() - t0 < 3.0


def test_runner_flags_a_run_that_heats_the_device_and_records_energy(tmp_path, tiny_onnx):
    """The runner on x86 against the simulator: a pre-heated device is waited for, the run heats it past
    the margin, battery power is sampled while the model runs; the numbers stay, the flag says why."""
    model, inputs = tiny_onnx
    with SimulatedSensors(
        tmp_path / "dev", SensorModel(rise_c=60.0, heat_tau_s=0.5, cool_tau_s=1.0, trip_c=90.0)
    ) as sim:
        sim.heat_to(45.0)
        env = dict(os.environ, EDGEPIPE_SENSORS_ROOT=str(tmp_path / "dev"), PATH="/usr/bin:/bin")
        argv = ["--model", str(model), "--inputs", str(inputs), "--runs", "20000", "--warmup", "2", "--no-accuracy"]
        argv += [
            "--cool-below",
            "35",
            "--cool-timeout",
            "60",
            "--warm-margin",
            "2",
            "--energy-hz",
            "50",
            "--energy-s",
            "0.5",
        ]
        proc = subprocess.run([sys.executable, str(RUNNER), *argv], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    r = Measured.model_validate(json.loads(proc.stdout.splitlines()[-1]))
    cool = r.thermal.cool_down
    assert cool["reached"] is True and cool["start_c"] >= 35.0 and cool["end_c"] < 35.0 and cool["waited_s"] > 0
    assert r.thermal.throttled is True and r.thermal.warmed_c > 2.0
    assert any(reason.startswith("warmed by") for reason in r.thermal.reasons)
    assert r.heat_warning().startswith("measured hot, flagged in the manifest: ")
    assert r.latency_ms.n == 20000  # the numbers are kept
    e = r.energy
    assert e.valid is True and e.source == "battery battery current_now x voltage_now" and e.samples >= 2
    # the battery's draw is 200..800 mA at 3.9 V: every mean lies in 0.78..3.12 W
    assert 780.0 <= e.idle_power_mw <= e.mean_power_mw <= 3120.0
    # energy comes from its own back-to-back phase after the timed runs (0.5 s asked)
    assert 0.5 <= e.wall_s < 5.0 and e.inferences > 100
    assert e.mj_per_inference == pytest.approx(e.mean_power_mw * e.wall_s / e.inferences, rel=1e-3)
    assert r.conditions.governors == ["schedutil"] and r.conditions.charging is False
    assert e.sensors.startswith("simulated") and r.conditions.sensors.startswith("simulated")  # labelled, always


def test_runner_on_this_machine_reads_the_real_files(tiny_onnx):
    model, inputs = tiny_onnx
    argv = ["--model", str(model), "--inputs", str(inputs), "--runs", "5", "--no-accuracy"]
    env = {k: v for k, v in os.environ.items() if k != "EDGEPIPE_SENSORS_ROOT"}
    proc = subprocess.run([sys.executable, str(RUNNER), *argv], capture_output=True, text=True, env=env)
    r = Measured.model_validate(json.loads(proc.stdout.splitlines()[-1]))
    assert r.conditions.cores_used == sorted(os.sched_getaffinity(0)) and r.conditions.sensors == "device"
    assert r.conditions.load_avg is not None and len(r.conditions.load_avg) == 3
    if not Path("/sys/class/thermal/thermal_zone0/temp").exists():  # this VM: nothing to read, nothing made up
        assert r.thermal.throttled is None and r.thermal.after["max_c"].startswith("not available")
    if not list(Path("/sys/class/power_supply").glob("*")) and not list(Path("/sys/class").glob("hwmon/*/power*")):
        assert r.energy.valid is False and r.energy.reason.startswith("not available")
        assert r.energy.mj_per_inference is None


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_classifier(d / "model.onnx")
    eval_set(d / "eval")
    return d / "model.onnx", d / "eval"


def test_a_device_without_python_is_read_by_one_shell_command_and_parsed_the_same(tmp_path, monkeypatch):
    """Android's benchmark_model path: CAPTURE runs in the phone's shell (here /bin/sh), CapturedSource
    hands its output to the same functions: the figures equal those read on the device itself."""
    steady = SensorModel(charging=True, cool_tau_s=1e9, trip_c=45.0)  # holds its temperature between the reads
    with SimulatedSensors(tmp_path / "dev", steady) as sim:
        sim.write_dumpsys(tmp_path / "bin")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
        monkeypatch.setenv("EDGEPIPE_SENSORS_ROOT", str(tmp_path / "dev"))
        sim.heat_to(48.0)
        local = sensors.conditions(), sensors.thermal_snapshot()
        out = subprocess.run(["/bin/sh", "-c", sensors.CAPTURE], capture_output=True, text=True, check=True).stdout
    with sensors.reading(sensors.CapturedSource(out)):
        captured = sensors.conditions(), sensors.thermal_snapshot()
    for part in ("cpufreq", "governors", "power", "screen", "sensors"):
        assert captured[0][part] == local[0][part], part
    assert captured[0]["cores_used"] is None or captured[0]["cores_used"] == "not available"
    assert captured[1] == local[1]  # zones, trip points, the broken zone named, Android status, battery
    assert captured[1]["android"]["status"] == 1 and captured[1]["max_c"] == 48.0
    with sensors.reading(sensors.CapturedSource("")):  # the shell said nothing (a dropped connection)
        assert sensors.thermal_snapshot()["max_c"].startswith("not available")
        assert sensors.conditions()["power"]["charging"] is None
