"""ORT format for ONNX Runtime Mobile, with ORT's own converter tool.

`--target_platform arm` bakes in the optimizations an ARM phone takes (int8 QDQ kept
as int8 kernels); the `.required_operators.config` it writes is what a reduced-size
ORT Mobile build (`--include_ops_by_config`) needs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import ModelError
from edgepipe.manifest import Artifact
from edgepipe.rundir import atomic_path
from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.stages import Result, Stages
from edgepipe.tasks.base import Task
from edgepipe.tokenized import TokenizedData


def to_ort_format(onnx_path: Path, out: Path, target_platform: str = "arm") -> dict[str, Any]:
    """Writes `out` (.ort) and `out` with suffix `.required_operators.config` beside it."""
    with tempfile.TemporaryDirectory(prefix="edgepipe-ort-") as tmp:
        src = Path(tmp) / "model.onnx"
        shutil.copyfile(onnx_path, src)
        cmd = [
            sys.executable,
            "-m",
            "onnxruntime.tools.convert_onnx_models_to_ort",
            "--optimization_style",
            "Fixed",
            "--target_platform",
            target_platform,
            "--output_dir",
            str(Path(tmp) / "out"),
            str(src),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        produced = Path(tmp) / "out" / "model.ort"
        if proc.returncode != 0 or not produced.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"ORT format conversion of {onnx_path.name} failed: {last}")
        config = out.with_suffix(".required_operators.config")
        with atomic_path(out) as t:
            shutil.copyfile(produced, t)
        with atomic_path(config) as t:
            shutil.copyfile(Path(tmp) / "out" / "model.required_operators.config", t)
    return {"target_platform": target_platform, "optimization_style": "Fixed", "required_operators": config.name}


def run(ctx: Stages, *, role: str, onnx: Artifact, data: TokenizedData, task: Task) -> Result:
    """The stage: `ort/ROLE.int8.ort` from the role's int8 ONNX, checked against it on the test split."""
    source, path = ctx.path(onnx.path), ctx.path(f"ort/{role}.int8.ort")
    report = to_ort_format(source, path)
    test = data.test
    a, b = OrtModel(source).predict(test), OrtModel(path).predict(test)
    report |= {
        "max_abs_vs_onnx": float(np.abs(a - b).max()),
        f"{task.agreement_name}_vs_onnx": task.agreement(b, a),
    } | {f"test_{name}": value for name, value in task.scores(b, test.labels).items()}
    return report, [path, path.with_suffix(".required_operators.config")]
