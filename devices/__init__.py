"""Benchmark runners per device. `runner.py` is standalone and runs on the device itself."""
