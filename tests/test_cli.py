"""The command group and flag wiring, in-process (no pipeline run)."""

import subprocess

import pytest
from typer.testing import CliRunner

from conftest import BIN
from edgepipe.app.cli import app, compress_app

runner = CliRunner()


def test_edgepipe_group_lists_run_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "run" in res.output and "version" in res.output
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and res.output.strip() == "0.1.0"


def test_compress_and_export_help_names_the_flags():
    res = runner.invoke(compress_app, ["--help"])
    assert res.exit_code == 0
    for flag in (
        "--out",
        "--config",
        "--teacher",
        "--data",
        "--smoke",
        "--train-threads",
        "--bench-threads",
        "--set",
        "--debug",
        "--devices",
    ):
        assert flag in res.output


@pytest.mark.e2e
def test_console_scripts_are_installed():
    for name in ("compress-and-export", "edgepipe"):
        proc = subprocess.run([str(BIN / name), "--help"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_flag_errors_are_one_line(tmp_path):
    res = runner.invoke(
        compress_app, ["--out", str(tmp_path / "o"), "--set", "distill.alpha", "--cache-dir", str(tmp_path)]
    )
    assert res.exit_code == 2 and "expected KEY=VALUE" in res.output
    res = runner.invoke(
        compress_app, ["--out", str(tmp_path / "o"), "--devices", "x86,quantum", "--cache-dir", str(tmp_path)]
    )
    assert res.exit_code == 2 and "unknown device 'quantum'" in res.output


def test_training_and_runtime_threads_have_distinct_names_and_the_old_one_still_works(tmp_path, monkeypatch):
    """`--threads` meant training threads in compress-and-export and runtime threads in edgepipe bench."""
    seen = {}

    def fake_run(cfg, out, cache_dir, progress):
        seen["cfg"] = cfg
        return None  # as a training process beside rank 0 does: nothing to report

    monkeypatch.setattr("edgepipe.app.run.compress_and_export", fake_run)
    res = runner.invoke(
        compress_app,
        ["--out", str(tmp_path / "o"), "--train-threads", "3", "--bench-threads", "2", "--cache-dir", str(tmp_path)],
    )
    assert res.exit_code == 0, res.output
    assert (seen["cfg"].threads, seen["cfg"].bench.threads) == (3, 2) and "note:" not in res.output
    res = runner.invoke(compress_app, ["--out", str(tmp_path / "o"), "--threads", "4", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 0 and seen["cfg"].threads == 4
    assert "note: --threads is now --train-threads; the old spelling still works" in res.output
    res = runner.invoke(app, ["bench", str(tmp_path / "nothing"), "--threads", "2"])
    assert (
        "note: --threads is now --bench-threads" in res.output and res.exit_code == 2
    )  # then: the path does not exist
