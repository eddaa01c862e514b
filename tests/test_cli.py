"""The command group and flag wiring, in-process (no pipeline run)."""

import subprocess

from typer.testing import CliRunner

from conftest import BIN
from edgepipe.cli import app, compress_app

runner = CliRunner()


def test_edgepipe_group_lists_run_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "run" in res.output and "version" in res.output
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and res.output.strip() == "0.1.0"


def test_compress_and_export_help_names_the_flags():
    res = runner.invoke(compress_app, ["--help"])
    assert res.exit_code == 0
    for flag in ("--out", "--config", "--teacher", "--data", "--smoke", "--threads", "--set", "--debug", "--devices"):
        assert flag in res.output


def test_console_scripts_are_installed():
    for name in ("compress-and-export", "edgepipe"):
        proc = subprocess.run([str(BIN / name), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_flag_errors_are_one_line(tmp_path):
    res = runner.invoke(compress_app, ["--out", str(tmp_path / "o"), "--set", "distill.alpha", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = runner.invoke(compress_app, ["--out", str(tmp_path / "o"), "--devices", "x86,quantum", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2 and "unknown device 'quantum'" in res.output
