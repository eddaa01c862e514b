"""ExecuTorch export (.pte lowered to XNNPACK) and inference with `executorch.runtime`, on a small trained BERT."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import train_tiny_classifier
from edgepipe.config import QuantizeConfig
from edgepipe.devices import x86
from edgepipe.devices.standalone import runner
from edgepipe.errors import DeviceError, ModelError
from edgepipe.export import executorch as et
from edgepipe.export.parity import check_parity
from edgepipe.measurement import Measurement
from edgepipe.model.train import predict
from edgepipe.runtimes.executorch import ExecuTorchModel
from edgepipe.tokenized import TokenizedData

SEQ = 32


@pytest.fixture(scope="module")
def lowered(tmp_path_factory):
    """fp32, int8 and 8da4w programs of one tiny classifier (~1.5 min of lowering on the 2-core VM)."""
    d = tmp_path_factory.mktemp("pte")
    model, splits = train_tiny_classifier(d, seed=3, n=500, held_out=100, seq_len=SEQ)
    data = TokenizedData(train=splits["train"], val=splits["val"], test=splits["test"], key="tiny")
    paths = {v: d / f"m.{v}.pte" for v in et.VARIANTS}
    reports = {
        "fp32": et.lower(et.exported_program(et.signature_module(model, None), model, data.test, SEQ), paths["fp32"])
    }
    qcfg = QuantizeConfig(calibration_examples=64)
    reports["int8"] = et.export_int8(model, paths["int8"], data, paths["fp32"], SEQ, qcfg, model.task)
    program, counts = et.int4_program(model, data.test, SEQ, 4)
    reports["8da4w"] = counts | et.lower(program, paths["8da4w"])
    return model, data, paths, reports


@pytest.mark.e2e
def test_fp32_matches_pytorch_at_any_batch_and_length_up_to_the_bounds(lowered):
    model, data, paths, reports = lowered
    assert check_parity(model, paths["fp32"], data.test, atol=1e-4)["parity_max_abs"] < 1e-5
    m = ExecuTorchModel(paths["fp32"])
    assert m.info["delegate"] == "XNNPACK" and (m.max_batch, m.max_seq) == (et.MAX_BATCH, SEQ)
    assert reports["fp32"]["xnnpack_partitions"] > 0 and "aten.native_layer_norm" in reports["fp32"]["portable_ops"]
    t = data.test
    module = et.signature_module(model, None)
    for rows, width in ((1, 5), (3, SEQ), (70, 12)):  # 70 > MAX_BATCH: run in two chunks
        feeds = [getattr(t, n)[:rows, :width] for n in model.input_names]
        with torch.no_grad():
            ref = module(*(torch.from_numpy(f).long() for f in feeds)).numpy()
        assert np.abs(m.run(*feeds) - ref).max() < 1e-5
    # a longer row is cut to the bound, as a TFLite model's fixed length cuts it
    long = [np.pad(getattr(t, n)[:2], ((0, 0), (0, 8))) for n in model.input_names]
    assert np.abs(m.run(*long) - m.run(*(x[:, :SEQ] for x in long))).max() == 0


@pytest.mark.e2e
def test_int8_is_small_accurate_within_budget_with_a_quantized_table(lowered):
    model, data, paths, reports = lowered
    r = reports["int8"]
    assert r["budget_met"] and r["float_groups"] == [] and r["embedding_bits"] == 4 and r["calibration_examples"] == 64
    assert "quantized_decomposed.embedding_4bit" in r["portable_ops"]  # the table never goes back to float
    assert paths["fp32"].stat().st_size / paths["int8"].stat().st_size > 5
    f, q = ExecuTorchModel(paths["fp32"]).predict(data.test), ExecuTorchModel(paths["int8"]).predict(data.test)
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.95 and 0 < np.abs(f - q).max() < 0.5


@pytest.mark.e2e
def test_8da4w_has_int4_linears_and_is_smaller_than_int8(lowered):
    model, data, paths, reports = lowered
    assert reports["8da4w"]["int4_linears"] == 13 and reports["8da4w"]["int8_linears"] == 0  # 2 layers x 6 + head
    assert paths["8da4w"].stat().st_size < paths["int8"].stat().st_size
    f, q = ExecuTorchModel(paths["fp32"]).predict(data.test), ExecuTorchModel(paths["8da4w"]).predict(data.test)
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.9


class _StrictAgreement:
    """The classification task with an agreement no int8 program reaches (1 - max |difference|): a budget
    nothing meets, so the loop walks the sensitivity ranking to its end."""

    def __init__(self, task):
        self.task = task
        self.metric = task.metric

    def score(self, outputs, labels):
        return self.task.score(outputs, labels)

    def agreement(self, outputs, reference):
        return 1.0 - float(np.abs(outputs - reference).max())


@pytest.mark.e2e
def test_a_budget_nothing_meets_keeps_groups_float_in_sensitivity_order(lowered, tmp_path):
    model, data, paths, _ = lowered
    qcfg = QuantizeConfig(calibration_examples=32, min_agreement=1.0, max_excluded_groups=1, embedding="int8")
    r = et.export_int8(model, tmp_path / "q.pte", data, paths["fp32"], SEQ, qcfg, _StrictAgreement(model.task))
    ranking = [s["group"] for s in r["sensitivity"]]
    assert sorted(ranking) == ["head", "layer 0", "layer 1"]
    assert len({s["output_mse"] for s in r["sensitivity"]}) == 3 and min(s["output_mse"] for s in r["sensitivity"]) > 0
    assert [s["output_mse"] for s in r["sensitivity"]] == sorted(
        (s["output_mse"] for s in r["sensitivity"]), reverse=True
    )
    assert [t["float_groups"] for t in r["tries"]] == [[], ranking[:1]]  # the most sensitive group first
    assert not r["budget_met"] and r["embedding_bits"] == 8
    best = max(r["tries"], key=lambda t: (t["val_accuracy"], t["val_agreement"]))  # the closest try ships
    assert (r["float_groups"], r["val_agreement"]) == (best["float_groups"], best["val_agreement"])
    assert r["val_agreement"] == pytest.approx(
        _StrictAgreement(model.task).agreement(
            ExecuTorchModel(tmp_path / "q.pte").predict(data.val), ExecuTorchModel(paths["fp32"]).predict(data.val)
        )
    )
    assert ExecuTorchModel(tmp_path / "q.pte").predict(data.test).shape == (
        len(data.test),
        2,
    )  # the closest try is kept


def test_quantized_word_embedding_decodes_as_written():
    """int8 rows and 4-bit groups, looked up by ExecuTorch's kernels, equal a hand decode within half a step."""
    table = torch.randn(50, 64) * torch.linspace(0.1, 3, 64)
    ids = torch.tensor([[0, 7, 49, 3]])
    for bits in (8, 4):
        q = et.QuantizedWordEmbedding(table, bits)
        got = q(ids)[0]
        if bits == 8:
            step = q.scales[ids[0]][:, None]
            hand = q.qweight[ids[0]].float() * step
        else:
            packed = q.qweight[ids[0]].to(torch.int16)
            nibbles = torch.stack((packed // 16, packed % 16), dim=-1).reshape(4, 64) - 8
            step = q.scales[ids[0]].repeat_interleave(et.GROUP, dim=1)
            hand = nibbles.float() * step
        assert torch.allclose(got, hand, atol=1e-6)
        assert (got - table[ids[0]]).abs().le(step / 2 + 1e-6).all()
    assert et.table_bits("int4", 48) == 8 and et.table_bits("int4", 64) == 4 and et.table_bits("fp32", 64) is None


@pytest.mark.e2e
def test_device_runner_measures_pte_like_the_host(lowered, tmp_path):
    model, data, paths, _ = lowered
    data.test.save(tmp_path / "eval")
    r = x86.benchmark(paths["int8"], tmp_path / "eval", Measurement(runs=10, warmup=2, seq_len=SEQ))
    assert r.runtime == "executorch" and r.delegate == "XNNPACK" and r.n_eval == len(data.test) and r.seq_len == SEQ
    host = ExecuTorchModel(paths["int8"]).predict(data.test)
    assert r.accuracy == pytest.approx(float((host.argmax(1) == data.test.labels).mean()))
    assert r.accuracy == pytest.approx(
        float((predict(model, data.test).argmax(1) == data.test.labels).mean()), abs=0.03
    )


@pytest.mark.e2e
def test_pte_runs_on_the_emulated_board_as_on_x86(lowered, executorch_board, tmp_path):
    """The int8 and 8da4w programs over SSH on the aarch64 board (qemu-user; torch + executorch installed
    there): same predictions as x86 on the first 20 examples (every int8 kernel is XNNPACK's on both)."""
    from rig.sshd import LoopbackSshd

    from edgepipe.config import SshConfig
    from edgepipe.device_spec import parse_device
    from edgepipe.devices.arm import open_arm

    _, data, paths, _ = lowered
    data.test.save(tmp_path / "eval")
    with LoopbackSshd(tmp_path / "sshd", path_prepend=[executorch_board / "bin"]) as ep:
        board = open_arm(
            parse_device(f"arm:{ep.user}@{ep.host}:{ep.port}"),
            SshConfig(identity_file=ep.key_path, known_hosts=ep.known_hosts),
        )
        try:
            measured = Measurement(runs=2, warmup=0, seq_len=SEQ, max_eval=20, energy={"sample_hz": 0})
            for variant in ("int8", "8da4w"):
                on_board = board.benchmark(paths[variant], tmp_path / "eval", measured)
                here = x86.benchmark(paths[variant], tmp_path / "eval", measured.model_copy(update={"runs": 2}))
                assert on_board.runtime == "executorch" and on_board.delegate == "XNNPACK", variant
                assert on_board.device_info["machine"] == "aarch64" and on_board.emulated == "qemu-user"
                assert on_board.n_eval == here.n_eval == 20 and on_board.accuracy == here.accuracy, variant
        finally:
            board.close()


@pytest.mark.e2e
def test_bad_pte_files_are_one_line_each(lowered, tmp_path):
    _, data, paths, _ = lowered
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(paths["int8"].read_bytes()[:4000])
    with pytest.raises(ModelError, match="truncated, corrupt or from an incompatible ExecuTorch version"):
        ExecuTorchModel(truncated)
    alien = tmp_path / "alien.pte"
    alien.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="not an ExecuTorch program"):
        ExecuTorchModel(alien)
    data.test.save(tmp_path / "eval")
    with pytest.raises(DeviceError, match="x86 runner failed on truncated.pte: model .* truncated") as e:
        x86.benchmark(truncated, tmp_path / "eval", Measurement(runs=1, warmup=0))
    assert "\n" not in str(e.value)


def test_a_device_without_executorch_is_told_what_to_install(tmp_path):
    """The runner on a device with numpy but no executorch: one line naming what .pte needs, exit 2."""
    model = tmp_path / "m.pte"
    model.write_bytes(b"\x00" * 64)
    block = "import sys; sys.modules['executorch'] = None; sys.argv[0] = 'runner';"
    code = f"{block} import runpy; sys.argv += ['--model', {str(model)!r}, '--inputs', '.']; runpy.run_path({runner.__file__!r}, run_name='__main__')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "runner: executorch is not installed on this device; .pte models need torch and the ExecuTorch runtime: "
        "pip install torch==2.13.0 && pip install --no-deps executorch==1.5.1"
    )


def test_missing_executorch_export_is_one_line_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(
        ModelError, match=r"needs executorch, which is not installed; pip install --no-deps 'executorch==1.5.1'"
    ):
        et.require_executorch()


@pytest.mark.e2e
def test_the_budget_search_builds_pte_candidates_with_the_stage_writers(lowered, tmp_path):
    from edgepipe.pipeline import search

    model, data, paths, _ = lowered
    writers = search.Writers(SEQ, 18, QuantizeConfig(calibration_examples=16))
    built = search.build_artifact(
        model, "executorch_int8", tmp_path / f"model{search._suffix('executorch_int8')}", data.train, writers
    )
    assert built.suffix == ".pte" and built.stat().st_size < paths["fp32"].stat().st_size / 4
    f, q = ExecuTorchModel(paths["fp32"]).predict(data.test), ExecuTorchModel(built).predict(data.test)
    assert (f.argmax(1) == q.argmax(1)).mean() >= 0.95


def test_the_runner_finds_the_delegate_across_read_chunks(tmp_path):
    """The delegate check reads a program in chunks (its size must not count in the runner's peak memory)."""
    path = tmp_path / "m.pte"
    for offset in (0, 5, 9, 10, 50):  # around the 10-byte chunk border
        path.write_bytes(b"HEADERxx" + b"." * offset + b"XnnpackBackend" + b"." * 7)
        assert runner._scan(str(path), b"XnnpackBackend", chunk=10) == (b"HEADERxx", True)
    path.write_bytes(b"HEADERxx" + b"XnnpackBackenX" * 3)
    assert runner._scan(str(path), b"XnnpackBackend", chunk=10) == (b"HEADERxx", False)
