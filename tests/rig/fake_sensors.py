"""A simulated sysfs (and, for the phone, `dumpsys`) for the emulated devices: the runner's sensor code
(devices/standalone/sensors.py) reads it through $EDGEPIPE_SENSORS_ROOT as it would read a real board's
or phone's /sys. Nothing here is a measurement of anything: temperatures and currents follow a simple
model so that the cool-down, the throttled flag and the energy arithmetic can be checked end to end.

The model, updated every `tick_s`: while a runner process of this device works (a process whose command
line names runner.py and whose environment points at this root; its CPU time per second is the
utilisation u), the zones heat toward ambient_c + rise_c x u with time constant `heat_tau_s` and the battery
draws idle_ma + (busy_ma - idle_ma) x u; otherwise they relax toward `ambient_c` with time constant `cool_tau_s`. A `passive` trip point at `trip_c` is published, as kernels do for the
temperature from which they throttle. Android's thermal status (dumpsys thermalservice) is 1 (light)
at or above the trip point.
"""

from __future__ import annotations

import math
import os
import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class SensorModel:
    ambient_c: float = 30.0
    rise_c: float = 45.0  # sustained full load settles this far above ambient (past the trip point: throttling)
    heat_tau_s: float = 20.0  # time constant of heating under full load
    cool_tau_s: float = 3.0
    trip_c: float = 70.0
    idle_ma: float = 200.0
    busy_ma: float = 800.0
    volts: float = 3.9
    charging: bool = False  # USB online and the battery charging
    battery: bool = True  # a battery with current/voltage (phone); False: an INA219 rail on hwmon (board)
    garbage_zone: bool = True  # one zone that reads garbage, as broken thermistors do
    zones: tuple[str, ...] = ("cpu-thermal", "soc-thermal")
    extra: dict = field(default_factory=dict)


class SimulatedSensors:
    """`with SimulatedSensors(root) as sim:` starts the model's thread; `sim.heat_to(60)` pre-heats."""

    def __init__(self, root: Path, model: SensorModel | None = None, tick_s: float = 0.1):
        self.root = Path(root).resolve()
        self.model = model or SensorModel()
        self.tick_s = tick_s
        self.temperature_c = self.model.ambient_c
        self.busy, self.utilisation, self.busy_seconds, self.hold = False, 0.0, 0.0, False
        self._present = False  # a runner process of this device exists
        self._seen: dict[str, float] = {}  # pid -> CPU seconds (a finished runner's work stays counted)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    # -- files ---------------------------------------------------------------------------------
    def _write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)  # a reader never sees half a number

    def _layout(self) -> None:
        m = self.model
        for i, name in enumerate(m.zones):
            self._write(f"sys/class/thermal/thermal_zone{i}/type", name)
            self._write(f"sys/class/thermal/thermal_zone{i}/trip_point_0_type", "passive")
            self._write(f"sys/class/thermal/thermal_zone{i}/trip_point_0_temp", str(int(m.trip_c * 1000)))
            self._write(f"sys/class/thermal/thermal_zone{i}/trip_point_1_type", "critical")
            self._write(f"sys/class/thermal/thermal_zone{i}/trip_point_1_temp", str(int((m.trip_c + 25) * 1000)))
        if m.garbage_zone:
            i = len(m.zones)
            self._write(f"sys/class/thermal/thermal_zone{i}/type", "unplugged-ntc")
            self._write(f"sys/class/thermal/thermal_zone{i}/temp", "-274000")  # below absolute zero: garbage
        for cpu in range(2):
            base = f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
            self._write(f"{base}/scaling_governor", "schedutil")
            self._write(f"{base}/scaling_min_freq", "408000")
            self._write(f"{base}/scaling_max_freq", "2400000")
        if m.battery:
            self._write("sys/class/power_supply/battery/type", "Battery")
            self._write("sys/class/power_supply/usb/type", "USB")
        else:
            self._write("sys/class/hwmon/hwmon0/name", "ina219")

    def _publish(self) -> None:
        m = self.model
        for i in range(len(m.zones)):
            offset = -1.5 * i  # the SoC zone a little cooler than the CPU's
            self._write(f"sys/class/thermal/thermal_zone{i}/temp", str(round((self.temperature_c + offset) * 1000)))
        for cpu in range(2):
            freq = 2400000 if self.temperature_c < m.trip_c else 1200000  # a throttled governor halves the clock
            self._write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", str(freq))
        ma = m.idle_ma + (m.busy_ma - m.idle_ma) * self.utilisation
        if m.battery:
            self._write("sys/class/power_supply/battery/current_now", str(int(-ma * 1000)))  # discharging: negative
            self._write("sys/class/power_supply/battery/voltage_now", str(int(m.volts * 1e6)))
            self._write("sys/class/power_supply/battery/temp", str(int((m.ambient_c + 2) * 10)))
            self._write("sys/class/power_supply/battery/status", "Charging" if m.charging else "Discharging")
            self._write("sys/class/power_supply/usb/online", "1" if m.charging else "0")
        else:
            self._write("sys/class/hwmon/hwmon0/power1_input", str(int(ma * m.volts * 1000)))  # microwatts
        self._write("dumpsys/thermal_status", "1" if self.temperature_c >= m.trip_c else "0")

    def heat_to(self, celsius: float, hold: bool = False) -> None:
        """Sets the device's temperature now (files included): a device still hot from earlier work.
        `hold`: it stays there until a runner process appears on this device (tests whose runner needs
        seconds to connect and upload still find the device hot)."""
        self.temperature_c, self.hold = celsius, hold
        self._publish()

    # -- the model -----------------------------------------------------------------------------
    def _runner_cpu_s(self) -> float:
        """CPU seconds used so far by this device's runner processes (command line names runner.py, the
        environment points at this root): heat follows work, so a runner that waits to cool does not heat."""
        marker = f"EDGEPIPE_SENSORS_ROOT={self.root}".encode()
        present = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"runner.py" not in f.read():
                        continue
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self._seen[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
                present = True
            except (OSError, IndexError, ValueError):
                continue
        self._present = present
        return sum(self._seen.values())

    def _loop(self) -> None:
        last, cpu_last = time.monotonic(), self._runner_cpu_s()
        while not self._stop.wait(self.tick_s):
            now, cpu = time.monotonic(), self._runner_cpu_s()
            dt, used = now - last, cpu - cpu_last
            last, cpu_last = now, cpu
            self.utilisation = min(1.0, max(0.0, used / dt)) if dt > 0 else 0.0
            if self.hold and not self._present:
                continue  # held hot until this device's runner shows up
            self.hold = False
            self.busy = self.utilisation > 0.2
            m = self.model
            if self.busy:  # Newton: toward ambient + rise_c x utilisation, never past it
                self.busy_seconds += dt
                hot = m.ambient_c + m.rise_c * self.utilisation
                if hot > self.temperature_c:
                    self.temperature_c = hot + (self.temperature_c - hot) * math.exp(-dt / m.heat_tau_s)
            else:
                self.temperature_c = m.ambient_c + (self.temperature_c - m.ambient_c) * math.exp(-dt / m.cool_tau_s)
            self._publish()

    def __enter__(self) -> SimulatedSensors:
        self._layout()
        self._publish()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    # -- the phone's dumpsys ----------------------------------------------------------------------
    def write_dumpsys(self, bin_dir: Path) -> Path:
        """A `dumpsys` for the loopback phone's PATH, in Android 12's formats, fed by this model's files
        and, for `meminfo PID`, by the real process's /proc/PID/smaps_rollup."""
        root = shlex.quote(str(self.root))
        script = f"""#!/bin/sh
# Generated by tests/rig/fake_sensors.py: the simulated phone's dumpsys (thermalservice, battery, power, meminfo).
R={root}
case "$1" in
thermalservice)
  t=$(cat "$R/sys/class/thermal/thermal_zone0/temp")
  echo "IsStatusOverride: false"
  echo "Thermal Status: $(cat "$R/dumpsys/thermal_status")"
  echo "Current temperatures from HAL:"
  echo "	Temperature{{mValue=$(awk "BEGIN{{print $t/1000}}"), mType=0, mName=CPU, mStatus=0}}"
  echo "	Temperature{{mValue=0.0, mType=4, mName=USB, mStatus=0}}"
  ;;
battery)
  echo "Current Battery Service state:"
  if [ "$(cat "$R/sys/class/power_supply/usb/online")" = 1 ]; then echo "  USB powered: true"; echo "  status: 2"; else echo "  USB powered: false"; echo "  status: 3"; fi
  echo "  AC powered: false"
  echo "  temperature: $(cat "$R/sys/class/power_supply/battery/temp")"
  ;;
power)
  echo "Display Power: state=ON"
  ;;
meminfo)
  awk '/^Rss:/{{r=$2}} /^Pss:/{{p=$2}} /^SwapPss:/{{s=$2}} END{{
    printf "** MEMINFO in pid %s [python3] **\\n", "'"$2"'";
    printf "           TOTAL PSS:%9d            TOTAL RSS:%9d      TOTAL SWAP PSS:%9d\\n", p, r, s}}' "/proc/$2/smaps_rollup"
  ;;
*) echo "Can't find service: $1"; exit 1 ;;
esac
"""
        path = Path(bin_dir) / "dumpsys"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
        return path
