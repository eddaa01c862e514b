"""Stage keys are derived from what a stage reads (edgepipe/stages.py), never built by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepipe.config import DistillConfig, build_config
from edgepipe.manifest import Artifact
from edgepipe.rundir import RunDir, write_bytes_atomic
from edgepipe.stages import Stages, derive_key


def test_settings_are_keyed_by_value_and_results_by_their_key():
    cfg = build_config({})
    base = {"distill": cfg.distill, "seed": 0, "fp32": Artifact(path="a.onnx", bytes=3, sha256="abc")}
    assert derive_key(base) == derive_key(dict(base))
    assert derive_key(base) != derive_key(base | {"distill": DistillConfig(temperature=4)})
    assert derive_key(base) != derive_key(base | {"seed": 1})
    # an artifact is its content: another path to the same bytes is the same input
    assert derive_key(base) == derive_key(base | {"fp32": Artifact(path="elsewhere.onnx", bytes=3, sha256="abc")})
    assert derive_key(base) != derive_key(base | {"fp32": Artifact(path="a.onnx", bytes=3, sha256="abd")})


@pytest.mark.parametrize("value", [Path("/tmp/x"), np.zeros(3), object()])
def test_an_input_without_a_key_or_a_plain_value_is_refused(value):
    with pytest.raises(TypeError, match="has no key"):
        derive_key({"thing": value})


def test_a_stage_gets_exactly_its_inputs_is_reused_and_reruns_when_one_changes(tmp_path):
    calls = []

    def stage(ctx, *, distill, seed):
        calls.append((distill.temperature, seed))
        path = ctx.path("out/result.txt")
        write_bytes_atomic(path, f"{distill.temperature} {seed}".encode())
        return {"value": distill.temperature * seed}, [path]

    with RunDir(tmp_path / "run") as rundir:
        stages = Stages(rundir)
        first = stages.run("s", stage, distill=DistillConfig(), seed=3)
        again = stages.run("s", stage, distill=DistillConfig(), seed=3)
        assert calls == [(2.0, 3)] and first == again and again.result == {"value": 6.0}
        assert list(again.files) == ["out/result.txt"] and stages.timings["s"]["reused"] is True
        changed = stages.run("s", stage, distill=DistillConfig(temperature=4.0), seed=3)
        assert calls[-1] == (4.0, 3) and changed.key != first.key and changed.result == {"value": 12.0}
        # the stage's name is positional: an input may be called `name`
        assert stages.run("t", lambda ctx, *, name: ({"name": name}, []), name="x").result == {"name": "x"}
