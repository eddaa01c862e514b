"""What a device says about itself while the runner measures on it: the conditions (CPU governor and
frequencies of the cores used, affinity, load, power source, screen), heat (thermal zones and their
passive trip points, x86 throttle counters, Android's thermal status, battery temperature), energy
(an hwmon power rail, else the battery's current x voltage, sampled while the model runs back to back) and, on
Android, `dumpsys meminfo` for the runner's process.

Standard library only: it travels with runner.py to every device. Every figure names its source; a
sensor that is absent or reads garbage is reported as "not available (why)", never as a number.
Sysfs is read under $EDGEPIPE_SENSORS_ROOT (default "/"); the test rig points it at a simulated tree
that heats while a runner works (tests/rig/fake_sensors.py) - numbers from there are labelled emulated.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import os
import re
import shutil
import subprocess
import threading
import time

NA = "not available"
ANDROID_THERMAL_STATUS = ("none", "light", "moderate", "severe", "critical", "emergency", "shutdown")
PLAUSIBLE_C = (-40.0, 150.0)  # a zone outside this reads garbage (a disconnected thermistor, a driver bug)


class LocalSource:
    """This device's own files and commands: sysfs under $EDGEPIPE_SENSORS_ROOT (default "/")."""

    def root(self) -> str:
        return os.environ.get("EDGEPIPE_SENSORS_ROOT", "/")

    def read(self, path: str) -> str | None:
        try:
            with open(path) as f:
                return f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None

    def glob(self, pattern: str) -> list[str]:
        return glob.glob(pattern)

    def dumpsys(self, service: str, *args: str, timeout: float = 20.0) -> str | None:
        """`dumpsys SERVICE ...` on Android (the runner runs as adb's shell user, which may call it); None elsewhere."""
        if shutil.which("dumpsys") is None:
            return None
        try:
            proc = subprocess.run(
                ["dumpsys", service, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 and proc.stdout.strip() else None

    def loadavg(self) -> list[float] | None:
        try:
            return [round(x, 2) for x in os.getloadavg()]
        except (AttributeError, OSError):
            return None

    def cores(self) -> list[int] | None:
        try:
            return sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None


class CapturedSource(LocalSource):
    """Files and dumpsys outputs read off a device in one shell command (CAPTURE), for devices without
    python (LiteRT's benchmark_model on a bare phone): the same code then reads them on the host."""

    def __init__(self, text: str):
        self.files: dict[str, str] = {}
        self.services: dict[str, str] = {}
        for block in text.split("\n@@edgepipe ")[1:]:
            head, _, body = block.partition("\n")
            kind, _, name = head.partition(" ")
            if kind == "file":
                self.files[_squeeze(name)] = body.rstrip("\n")
            else:
                self.services[name] = body.rstrip("\n")
        self.root_dir = self.services.pop("root", "/").strip() or "/"

    def root(self) -> str:
        return self.root_dir

    def read(self, path: str) -> str | None:
        text = self.files.get(_squeeze(path))
        return None if text is None else text.strip()

    def glob(self, pattern: str) -> list[str]:
        import fnmatch

        pattern = _squeeze(pattern)
        parts = pattern.count("/")
        return sorted(p for p in self.files if p.count("/") == parts and fnmatch.fnmatchcase(p, pattern)) + sorted(
            {
                p.rsplit("/", 1)[0]
                for p in self.files
                if p.count("/") == parts + 1 and fnmatch.fnmatchcase(p.rsplit("/", 1)[0], pattern)
            }
        )

    def dumpsys(self, service: str, *args: str, timeout: float = 20.0) -> str | None:
        return self.services.get(" ".join((service, *args))) or None

    def loadavg(self) -> list[float] | None:
        try:
            return [float(x) for x in self.services["loadavg"].split()[:3]]
        except (KeyError, ValueError):
            return None

    def cores(self) -> list[int] | None:
        return None  # benchmark_model's own affinity: the measurement's pin_cores says it


def _squeeze(path: str) -> str:
    return re.sub("/+", "/", path)  # "$R"/sys with R=/ is //sys; os.path.join("/", "sys") is /sys


# One shell command (POSIX sh, toybox on Android) that prints what CapturedSource reads: the same
# files LocalSource would open, each after a marker line. $EDGEPIPE_SENSORS_ROOT as for the runner.
CAPTURE = r"""R="${EDGEPIPE_SENSORS_ROOT:-/}"; printf '\n@@edgepipe service root\n%s\n' "$R"
for f in "$R"/sys/class/thermal/thermal_zone*/type "$R"/sys/class/thermal/thermal_zone*/temp \
  "$R"/sys/class/thermal/thermal_zone*/trip_point_*_type "$R"/sys/class/thermal/thermal_zone*/trip_point_*_temp \
  "$R"/sys/class/power_supply/*/type "$R"/sys/class/power_supply/*/online "$R"/sys/class/power_supply/*/status \
  "$R"/sys/class/power_supply/*/temp "$R"/sys/devices/system/cpu/cpu*/cpufreq/scaling_*_freq \
  "$R"/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor "$R"/sys/class/backlight/*/bl_power; do
  [ -r "$f" ] && printf '\n@@edgepipe file %s\n%s\n' "$f" "$(cat "$f" 2>/dev/null)"
done
printf '\n@@edgepipe service loadavg\n%s\n' "$(cat /proc/loadavg 2>/dev/null)"
if command -v dumpsys >/dev/null 2>&1; then
  for s in thermalservice battery power; do printf '\n@@edgepipe service %s\n%s\n' "$s" "$(dumpsys $s 2>/dev/null)"; done
fi
"""

_LOCAL = LocalSource()
_SOURCE: contextvars.ContextVar[LocalSource | None] = contextvars.ContextVar("sensor_source", default=None)


def _src() -> LocalSource:
    return _SOURCE.get() or _LOCAL


@contextlib.contextmanager
def reading(source: LocalSource):
    """Every function below reads `source` within this block (per thread: devices are measured side by side)."""
    token = _SOURCE.set(source)
    try:
        yield
    finally:
        _SOURCE.reset(token)


def sys_path(*parts: str) -> str:
    return os.path.join(_src().root(), "sys", *parts)


def provenance() -> str:
    """Stamped on every sensor figure: the device's own files, or the test rig's simulation of them."""
    root = _src().root()
    return "device" if os.path.abspath(root) == "/" else f"simulated (EDGEPIPE_SENSORS_ROOT={root})"


def read_text(path: str) -> str | None:
    return _src().read(path)


def _glob(pattern: str) -> list[str]:
    return _src().glob(pattern)


def read_number(path: str, scale: float = 1.0, plausible: tuple[float, float] | None = None) -> float | None:
    """The file's integer times `scale`; None when missing, unreadable, not a number or implausible."""
    text = read_text(path)
    try:
        value = float(int(text)) * scale  # sysfs numbers are integers: "45000", "-1203000"
    except (TypeError, ValueError):
        return None
    if plausible is not None and not plausible[0] <= value <= plausible[1]:
        return None
    return value


def dumpsys(service: str, *args: str, timeout: float = 20.0) -> str | None:
    return _src().dumpsys(service, *args, timeout=timeout)


# -- conditions -----------------------------------------------------------------------------------


def cores_used() -> list[int] | None:
    return _src().cores()


def cpu_frequencies(cores: list[int] | None) -> dict:
    """Governor and cur/min/max MHz of each core this process may run on."""
    out: dict = {}
    for cpu in cores if cores is not None else range(os.cpu_count() or 1):
        base = sys_path("devices", "system", "cpu", f"cpu{cpu}", "cpufreq")
        governor = read_text(os.path.join(base, "scaling_governor"))
        freqs = {
            k: read_number(os.path.join(base, f"scaling_{k}_freq"), 1e-3, (1.0, 20_000.0))
            for k in ("cur", "min", "max")
        }
        if governor is None and all(v is None for v in freqs.values()):
            continue
        out[f"cpu{cpu}"] = {"governor": governor or NA} | {f"{k}_mhz": v for k, v in freqs.items() if v is not None}
    return out


def power_supplies() -> dict:
    """Each /sys/class/power_supply entry's type, online flag and status (Charging/Discharging/Full)."""
    out = {}
    for path in sorted(_glob(sys_path("class", "power_supply", "*"))):
        entry = {
            "type": read_text(os.path.join(path, "type")),
            "online": read_number(os.path.join(path, "online")),
            "status": read_text(os.path.join(path, "status")),
        }
        out[os.path.basename(path)] = {k: v for k, v in entry.items() if v is not None}
    return out


def charging_state(supplies: dict) -> dict:
    """Whether the device draws from outside (charger or USB): energy read off the battery is then wrong."""
    if not supplies:
        battery = dumpsys("battery")
        if battery is None:
            return {"charging": None, "source": NA + " (no /sys/class/power_supply, no dumpsys)"}
        powered = re.findall(r"^\s*(AC|USB|Wireless|Dock) powered:\s*(true|false)", battery, re.M)
        status = re.search(r"^\s*status:\s*(\d+)", battery, re.M)  # BatteryManager: 2 charging, 5 full
        plugged = [kind for kind, on in powered if on == "true"]
        return {
            "charging": bool(plugged) or (status is not None and status.group(1) in ("2", "5")),
            "external_power": plugged,
            "source": "dumpsys battery",
        }
    external = [
        name for name, s in supplies.items() if s.get("type") not in (None, "Battery") and s.get("online") == 1.0
    ]
    batteries = {name: s.get("status") for name, s in supplies.items() if s.get("type") == "Battery"}
    charging = bool(external) or any(st in ("Charging", "Full") for st in batteries.values())
    return {"charging": charging, "external_power": external, "battery_status": batteries, "source": "power_supply"}


def screen_state() -> str:
    power = dumpsys("power")
    if power is not None:
        m = re.search(r"Display Power: state=(\w+)", power) or re.search(r"mWakefulness=(\w+)", power)
        if m:
            return m.group(1).lower().replace("awake", "on").replace("asleep", "off")
    states = [read_text(p) for p in _glob(sys_path("class", "backlight", "*", "bl_power"))]
    if states and all(s is not None for s in states):
        return "on" if "0" in states else "off"  # FB_BLANK_UNBLANK == 0
    return NA


def load_average() -> list[float] | str:
    return _src().loadavg() or NA


def conditions() -> dict:
    """Recorded with every result: what else decides a latency or an energy figure."""
    cores = cores_used()
    supplies = power_supplies()
    freqs = cpu_frequencies(cores)
    load = load_average()
    return {
        "cores_used": cores if cores is not None else NA,
        "cpufreq": freqs or NA + " (no cpufreq in sysfs: a VM, or the kernel hides it)",
        "governors": sorted({v["governor"] for v in freqs.values()}) if freqs else NA,
        "load_avg": load,
        "power": charging_state(supplies),
        "screen": screen_state(),
        "sensors": provenance(),
    }


# -- heat -----------------------------------------------------------------------------------------


def thermal_zones() -> tuple[dict, dict, list[str]]:
    """({zone: °C}, {zone: passive trip °C}, problems). A zone that reads garbage is left out and named."""
    temps, trips, problems = {}, {}, []
    for path in sorted(_glob(sys_path("class", "thermal", "thermal_zone*")), key=_zone_number):
        name = (
            f"{read_text(os.path.join(path, 'type')) or 'zone'}:{os.path.basename(path).removeprefix('thermal_zone')}"
        )
        value = read_number(os.path.join(path, "temp"), 1e-3, PLAUSIBLE_C)
        if value is None:
            problems.append(f"{name}: unreadable ({(read_text(os.path.join(path, 'temp')) or 'no file')[:20]!r})")
            continue
        temps[name] = round(value, 1)
        for trip_type in _glob(os.path.join(path, "trip_point_*_type")):
            if read_text(trip_type) == "passive":
                trip = read_number(trip_type.removesuffix("_type") + "_temp", 1e-3, PLAUSIBLE_C)
                if trip is not None:
                    trips[name] = min(trip, trips.get(name, trip))
    return temps, trips, problems


def _zone_number(path: str) -> int:
    digits = os.path.basename(path).removeprefix("thermal_zone")
    return int(digits) if digits.isdigit() else 1 << 30


def throttle_events() -> int | None:
    """x86: the kernel's count of thermal throttling events over all cores (thermal_throttle sysfs)."""
    counts = [
        read_number(p)
        for p in _glob(sys_path("devices", "system", "cpu", "cpu*", "thermal_throttle", "*_throttle_count"))
    ]
    counts = [c for c in counts if c is not None]
    return int(sum(counts)) if counts else None


def android_thermal() -> dict | None:
    """`dumpsys thermalservice`: the framework's thermal status (0 none .. 6 shutdown) and the HAL's temperatures."""
    text = dumpsys("thermalservice")
    if text is None:
        return None
    status = re.search(r"Thermal Status:\s*(\d+)", text)
    current = text.split("Current temperatures from HAL:", 1)[-1]
    temps = {}
    for value, name in re.findall(r"Temperature\{mValue=([-\d.]+), mType=-?\d+, mName=([^,]+),", current):
        v = float(value)
        if PLAUSIBLE_C[0] < v <= PLAUSIBLE_C[1] and v != 0.0:  # 0.0: an unpopulated sensor (SUBBAT, USB)
            temps[name] = v
    level = int(status.group(1)) if status else None
    return {
        "status": level,
        "status_name": ANDROID_THERMAL_STATUS[level] if level is not None and level < 7 else NA,
        "hal_c": temps,
    }


def battery_temperature() -> float | None:
    for path in _glob(sys_path("class", "power_supply", "*", "temp")):
        if read_text(os.path.join(os.path.dirname(path), "type")) == "Battery":
            value = read_number(path, 0.1, PLAUSIBLE_C)  # tenths of a degree
            if value is not None:
                return round(value, 1)
    return None


def thermal_snapshot() -> dict:
    """The device's thermal state now; `max_c` is what a cool-down waits on."""
    temps, trips, problems = thermal_zones()
    snap: dict = {"zones_c": temps, "passive_trip_c": trips, "sensors": provenance()}
    android = android_thermal()
    if android is not None:
        snap["android"] = android
        temps = temps | {f"hal:{k}": v for k, v in android["hal_c"].items()}
    battery = battery_temperature()
    if battery is not None:
        snap["battery_c"] = battery
    events = throttle_events()
    if events is not None:
        snap["throttle_events"] = events
    readings = list(temps.values()) or ([battery] if battery is not None else [])
    snap["max_c"] = max(readings) if readings else NA + " (no readable thermal zone)"
    if problems:
        snap["problems"] = problems
    return snap


def _max_c(snap: dict) -> float | None:
    return snap["max_c"] if isinstance(snap.get("max_c"), float | int) else None


def cool_down(threshold_c: float, timeout_s: float, poll_s: float = 1.0, snapshot=None) -> dict:
    """Waits until the device's hottest reading is below `threshold_c`, at most `timeout_s` (then the run
    goes on, and `reached: false` makes the host print a warning and flag the result)."""
    snapshot = snapshot or thermal_snapshot  # a function: the host's reads a device without python over adb
    t0 = time.monotonic()
    start = _max_c(snapshot())
    record = {"threshold_c": threshold_c, "timeout_s": timeout_s, "start_c": start if start is not None else NA}
    if start is None:
        return record | {"reached": None, "waited_s": 0.0, "note": NA + " (no readable thermal zone)"}
    now = start
    while now is not None and now >= threshold_c and time.monotonic() - t0 < timeout_s:
        time.sleep(poll_s)
        now = _max_c(snapshot())
    return record | {
        "reached": now is not None and now < threshold_c,
        "waited_s": round(time.monotonic() - t0, 2),
        "end_c": now if now is not None else NA,
    }


def thermal_verdict(before: dict, after: dict, warm_margin_c: float) -> dict:
    """Whether this run's numbers were taken hot: a passive trip point reached (the kernel throttles from
    there), Android's status above none, x86 throttle events during the run, or the device warmer at the
    end than at the start by more than `warm_margin_c`. None where no sensor could say."""
    reasons = []
    temps, trips = after.get("zones_c", {}), after.get("passive_trip_c", {})
    for zone, trip in trips.items():
        if zone in temps and temps[zone] >= trip:
            reasons.append(f"{zone} at {temps[zone]:.1f} C, at or above its passive trip point {trip:.1f} C")
    android = after.get("android") or {}
    if (android.get("status") or 0) >= 1:
        reasons.append(f"Android thermal status {android['status']} ({android['status_name']})")
    if (
        "throttle_events" in before
        and "throttle_events" in after
        and after["throttle_events"] > before["throttle_events"]
    ):
        reasons.append(f"{after['throttle_events'] - before['throttle_events']} CPU throttle events during the run")
    start, end = _max_c(before), _max_c(after)
    warmed = None if start is None or end is None else round(end - start, 1)
    if warmed is not None and warmed > warm_margin_c:
        reasons.append(f"warmed by {warmed:.1f} C (margin {warm_margin_c:.1f} C)")
    known = start is not None or end is not None or "android" in after or "throttle_events" in after
    return {
        "throttled": bool(reasons) if known else None,
        "reasons": reasons,
        "warmed_c": warmed if warmed is not None else NA,
        "warm_margin_c": warm_margin_c,
    }


def thermal_record(
    cool: dict, before: dict, after: dict, warm_margin_c: float, cool_below_c: float | None, cool_timeout_s: float
) -> dict:
    """The row's `thermal`: cool-down, both snapshots and the verdict; a cool-down that timed out flags
    the row too (measured hot on purpose: the user asked for a cooler start)."""
    record = {"cool_down": cool, "before": before, "after": after} | thermal_verdict(before, after, warm_margin_c)
    if cool_below_c is not None and cool.get("reached") is False:
        record["throttled"] = True
        record["reasons"].append(
            f"cool-down did not reach {cool_below_c:.1f} C in {cool_timeout_s:.0f} s (ended at {cool['end_c']} C)"
        )
    return record


NO_COOL_DOWN = {"note": "no cool-down asked (bench.thermal.cool_below_c)"}


# -- energy ---------------------------------------------------------------------------------------


def power_source() -> tuple[str, object] | None:
    """(description, reader of watts). A board's hwmon power rail (INA2xx: power*_input in microwatts)
    comes first; else a battery's current_now (uA) x voltage_now (uV). None: nothing measures power."""
    for path in sorted(_glob(sys_path("class", "hwmon", "hwmon*", "power*_input"))):
        if read_number(path) is not None:
            name = read_text(os.path.join(os.path.dirname(path), "name")) or "hwmon"
            return f"hwmon {name} {os.path.basename(path)}", lambda p=path: _watts(read_number(p, 1e-6))
    for supply in sorted(_glob(sys_path("class", "power_supply", "*"))):
        if read_text(os.path.join(supply, "type")) != "Battery":
            continue
        cur, volt = os.path.join(supply, "current_now"), os.path.join(supply, "voltage_now")
        if read_number(cur) is not None and read_number(volt) is not None:
            return (
                f"battery {os.path.basename(supply)} current_now x voltage_now",
                lambda c=cur, v=volt: _battery_watts(read_number(c), read_number(v)),
            )
    return None


def _watts(value: float | None) -> float | None:
    return abs(value) if value is not None and abs(value) < 1_000 else None  # > 1 kW: garbage


def _battery_watts(micro_amps: float | None, micro_volts: float | None) -> float | None:
    """|I| x V; the sign of current_now differs between vendors (discharge is negative on some)."""
    if micro_amps is None or micro_volts is None or not 0 < micro_volts < 30e6:
        return None
    return _watts(abs(micro_amps) * 1e-6 * micro_volts * 1e-6)


class PowerSampler:
    """Reads the power source every 1/hz s on a thread while the model runs (the runtimes release the
    GIL while they compute; one sysfs read costs microseconds)."""

    def __init__(self, read, hz: float):
        self.read, self.period = read, 1.0 / hz
        self.samples: list[tuple[float, float]] = []
        self.bad = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            watts = self.read()
            if watts is None:
                self.bad += 1
            else:
                self.samples.append((time.perf_counter(), watts))
            self._stop.wait(self.period)

    def __enter__(self) -> PowerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def sample_idle(read, seconds: float, hz: float) -> PowerSampler:
    with PowerSampler(read, hz) as sampler:
        time.sleep(seconds)
    return sampler


def energy_report(
    source: str,
    hz: float,
    run: PowerSampler,
    idle: PowerSampler | None,
    wall_s: float,
    inferences: int,
    charging: bool | None,
    external_meter: bool,
) -> dict:
    """mJ per inference = mean power while the model ran back to back (W) x that wall time (s) / inferences
    x 1000 (an inference: one call, of the measurement's batch);
    `above_idle` subtracts the idle device's mean power sampled before the model was loaded. A battery
    reading on a charging / USB-powered device is recorded but marked invalid (the charger, not the
    battery, feeds the model) unless the user declared an external meter."""
    record: dict = {"source": source, "sensors": provenance(), "sample_hz_requested": hz, "samples": len(run.samples)}
    if run.bad:
        record["unreadable_samples"] = run.bad
    if len(run.samples) < 2:
        return record | {
            "valid": False,
            "reason": f"{len(run.samples)} readable samples in {wall_s:.2f} s; raise bench.energy.seconds or bench.energy.sample_hz",
        }
    times = [t for t, _ in run.samples]
    mean_w = sum(w for _, w in run.samples) / len(run.samples)
    record |= {
        "sample_hz_achieved": round((len(times) - 1) / (times[-1] - times[0]), 2) if times[-1] > times[0] else NA,
        "mean_power_mw": round(mean_w * 1e3, 3),
        "wall_s": round(wall_s, 4),
        "inferences": inferences,
        "mj_per_inference": mean_w * wall_s / inferences * 1e3,
    }
    if idle is not None and idle.samples:
        idle_w = sum(w for _, w in idle.samples) / len(idle.samples)
        record |= {
            "idle_power_mw": round(idle_w * 1e3, 3),
            "mj_per_inference_above_idle": (mean_w - idle_w) * wall_s / inferences * 1e3,
        }
    battery = source.startswith("battery")
    if battery and charging and not external_meter:
        return record | {
            "valid": False,
            "reason": "the device is charging or USB-powered, so the battery's current is not the model's draw; "
            "unplug it (adb over Wi-Fi) or set bench.energy.external_meter if a meter powers it",
        }
    if battery and charging is None and not external_meter:
        return record | {
            "valid": False,
            "reason": "the charging state is not available; the battery reading may include a charger",
        }
    return record | {"valid": True}


# -- memory (Android) -----------------------------------------------------------------------------


def dumpsys_meminfo(pid: int) -> dict | None:
    """Android's own accounting of this process (what `adb shell dumpsys meminfo PID` shows), MB."""
    text = dumpsys("meminfo", str(pid))
    if text is None:
        return None
    out = {}
    for key, pattern in (
        ("total_pss_mb", r"TOTAL PSS:\s*(\d+)"),
        ("total_rss_mb", r"TOTAL RSS:\s*(\d+)"),
        ("total_swap_pss_mb", r"TOTAL SWAP PSS:\s*(\d+)"),
    ):
        m = re.search(pattern, text)
        if m:
            out[key] = int(m.group(1)) / 1024.0
    if "total_pss_mb" not in out:  # Android < 10: only the table's TOTAL row (its first column is PSS)
        m = re.search(r"^\s*TOTAL\s+(\d+)", text, re.M)
        if m:
            out["total_pss_mb"] = int(m.group(1)) / 1024.0
    return (
        (out | {"source": f"dumpsys meminfo {pid}"})
        if out
        else {"source": NA + " (dumpsys meminfo said nothing usable)"}
    )
