"""Benchmark devices: the local x86 CPU, ARM boards over SSH, Android devices over adb.

Every device runs the same standalone runner (standalone/runner.py) with the same flags
(`Measurement.to_argv`) and returns the same typed result (`Measured`); a device is one
transport file (x86.py, arm.py, android.py), opened and held by pool.py."""
