"""Static int8 ONNX quantization on a small trained BERT, with real onnxruntime."""

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from conftest import train_tiny_classifier
from edgepipe.config import QuantizeConfig, build_config
from edgepipe.errors import ConfigError, DataError
from edgepipe.export.onnx import export_onnx
from edgepipe.pipeline.quantize import CalibrationReader, quantize
from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.tokenized import TokenizedSplit


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer BERT fine-tuned on a learnable sentiment task, exported to ONNX."""
    d = tmp_path_factory.mktemp("quant")
    model, splits = train_tiny_classifier(d, seed=2, n=700, held_out=150, seq_len=32)
    path = d / "fp32.onnx"
    export_onnx(model, path, splits["test"])
    return d, model, splits, path


def scales(path):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {
        n.input[0]: float(np.asarray(inits[n.input[1]]).ravel()[0])
        for n in m.graph.node
        if n.op_type == "QuantizeLinear"
    }


# (quantize.embedding, table initializer suffix, its ONNX type, its lookup op, fp32 / int8 file size floor):
# hidden 64, so per-row fp32 scales cost 1/16 of an int8 table (< 4x; the default model reaches 3.8x),
# fp16 block scales 1/8 of a 4-bit one
TABLES = {
    "int8": ("_int8", onnx.TensorProto.INT8, "Gather", 3.2),
    "int4": ("_int4", onnx.TensorProto.UINT8, "GatherBlockQuantized", 5.5),
}


@pytest.mark.parametrize("embedding", sorted(TABLES))
def test_int8_is_smaller_accurate_and_keeps_the_embedding_table_quantized(trained, tmp_path, embedding):
    d, _, splits, fp32 = trained
    suffix, dtype, op, ratio = TABLES[embedding]
    out = tmp_path / "int8.onnx"
    qcfg = QuantizeConfig(calibration_examples=128, embedding=embedding)
    r = quantize(fp32, out, splits["train"], splits["val"], qcfg, seq_len=32)
    assert r["mode"] == "static" and r["budget_met"] and r["int8_embeddings"] == 1 and r["quantized_matmuls"] > 0
    assert r["embedding_bits"] == int(embedding[-1]) and r["int4_embeddings"] == (embedding == "int4")
    assert fp32.stat().st_size / out.stat().st_size > ratio
    m = onnx.load(str(out))
    # the table is quantized and is gathered before it is scaled: no DequantizeLinear over the whole table
    table = next(i for i in m.graph.initializer if i.name.endswith(f"word_embeddings.weight{suffix}"))
    assert table.data_type == dtype and table.dims[0] == 30522
    gather = next(n for n in m.graph.node if n.input and n.input[0] == table.name)
    assert gather.op_type == op
    q, f = OrtModel(out).predict(splits["test"]), OrtModel(fp32).predict(splits["test"])
    assert (q.argmax(1) == f.argmax(1)).mean() >= 0.95
    assert (q.argmax(1) == splits["test"].labels).mean() >= 0.9


def test_int4_blocks_decode_in_onnxruntime_to_the_values_they_encode(tmp_path):
    """The packing (two values per byte, low nibble first, +8) read back by ORT's GatherBlockQuantized
    equals a hand decode, and each value is within half a step of the float it came from (one step for
    the rare value of the peak's opposite sign that the [-8, 7] range clips)."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edgepipe.pipeline.quantize import int4_blocks

    rng = np.random.default_rng(0)
    table = rng.normal(size=(300, 64)).astype(np.float32)
    table[7] = 0.0  # an all-zero row: scale 1, values 0
    data, scale, block = int4_blocks(table)
    assert block == 32 and data.shape == (300, 32) and scale.shape == (300, 2) and scale.dtype == np.float16
    low, high = (data & 0x0F).astype(np.int16) - 8, (data >> 4).astype(np.int16) - 8
    values = np.empty((300, 64), dtype=np.int16)
    values[:, 0::2], values[:, 1::2] = low, high
    decoded = values.reshape(300, 2, 32) * scale.astype(np.float32)[..., None]
    assert values.min() >= -8 and values.max() <= 7
    step = np.abs(scale.astype(np.float32))[..., None]
    error = np.abs(decoded - table.reshape(300, 2, 32))
    # within half a step, except values of the peak's opposite sign beyond 7 steps (clipped to 7: < 1 step)
    clipped = values.reshape(300, 2, 32) == 7
    assert np.all(error[~clipped] <= (step / 2 + 1e-3 * step).repeat(32, -1)[~clipped])
    assert np.all(error <= step * 1.001) and clipped.mean() < 0.05  # 7s, clipped or not: 2 % here
    assert int4_blocks(np.zeros((4, 40), dtype=np.float32)) is None  # no block size divides 40
    node = helper.make_node(
        "GatherBlockQuantized",
        ["t", "ids", "s"],
        ["y"],
        domain="com.microsoft",
        gather_axis=0,
        quantize_axis=1,
        block_size=32,
        bits=4,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [None, 64])],
        [numpy_helper.from_array(data, "t"), numpy_helper.from_array(scale, "s")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, str(tmp_path / "g.onnx"))
    ids = np.array([0, 7, 299, 42], dtype=np.int64)
    got = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    assert np.allclose(got.astype(np.float32), decoded.reshape(300, 64)[ids].astype(np.float16).astype(np.float32))
    assert not got[1].any()


@pytest.mark.parametrize("embedding", sorted(TABLES))
def test_onnxruntime_keeps_the_quantized_gather_after_its_graph_optimizations(trained, tmp_path, embedding):
    """ORT may constant-fold `DequantizeLinear(table)` into an fp32 table; check it did not."""
    import onnxruntime as ort

    suffix, dtype, op, _ = TABLES[embedding]
    _, _, splits, fp32 = trained
    out = tmp_path / "int8.onnx"
    qcfg = QuantizeConfig(max_accuracy_drop=100, embedding=embedding)
    quantize(fp32, out, splits["train"], splits["val"], qcfg, seq_len=32)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    g = onnx.load(str(tmp_path / "optimized.onnx")).graph
    inits = {i.name: i for i in g.initializer}
    table = next(n for n in inits if n.endswith(f"word_embeddings.weight{suffix}"))
    assert inits[table].data_type == dtype
    assert [n.op_type for n in g.node if table in n.input] == [op]
    big_float = [i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT and np.prod(i.dims) >= 30522 * 64]
    assert not big_float  # no fp32 copy of the table was materialised


def test_calibration_uses_the_data_it_is_given(trained, tmp_path):
    d, _, splits, fp32 = trained
    real = splits["train"]
    rng = np.random.default_rng(0)
    noise = TokenizedSplit(
        rng.integers(1000, 30000, real.input_ids.shape),
        np.ones_like(real.attention_mask),
        real.token_type_ids,
        real.labels,
    )
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    cfg = QuantizeConfig(calibration_examples=64, max_accuracy_drop=100)
    quantize(fp32, a, real, splits["val"], cfg, seq_len=32)
    quantize(fp32, b, noise, splits["val"], cfg, seq_len=32)
    sa, sb = scales(a), scales(b)
    assert sa.keys() == sb.keys()
    assert sum(not np.isclose(sa[k], sb[k]) for k in sa) > len(sa) // 2


@pytest.mark.parametrize("op_types", [["MatMul", "Gemm"], ["all"]])
def test_int8_model_respects_the_attention_mask(trained, tmp_path, op_types):
    _, _, splits, fp32 = trained
    out = tmp_path / "int8.onnx"
    quantize(
        fp32, out, splits["train"], splits["val"], QuantizeConfig(op_types=op_types, max_accuracy_drop=100), seq_len=32
    )
    ort = OrtModel(out)
    t = splits["test"]
    ids, mask, types = t.input_ids[:32].copy(), t.attention_mask[:32].copy(), t.token_type_ids[:32]
    base = ort.run(ids, mask, types)
    padded = mask == 0
    assert padded.any()
    ids2 = ids.copy()
    ids2[padded] = 7592  # a real word in the padded positions
    assert np.abs(ort.run(ids2, mask, types) - base).max() < 1e-4
    mask2 = mask.copy()
    mask2[:, 2:4] = 0  # hide real tokens
    assert np.abs(ort.run(ids, mask2, types) - base).max() > 1e-3
    # the same texts cut to the batch's longest real length (as the bench and apps send them)
    n = int(mask.sum(1).max())
    assert n < ids.shape[1] and np.abs(ort.run(ids[:, :n], mask[:, :n], types[:, :n]) - base).max() < 1e-4


def test_attention_is_fused_into_multihead_attention_before_int8(trained, tmp_path):
    """Each layer's attention becomes one MultiHeadAttention (ONNX Runtime contrib op) before static int8:
    fewer quantize/dequantize pairs, the same predictions; off, the graph is quantized as exported."""
    from collections import Counter

    _, _, splits, fp32 = trained
    fused, plain = tmp_path / "fused.onnx", tmp_path / "plain.onnx"
    r = quantize(fp32, fused, splits["train"], splits["val"], QuantizeConfig(), seq_len=32)
    p = quantize(fp32, plain, splits["train"], splits["val"], QuantizeConfig(fuse_attention=False), seq_len=32)
    f = r["attention_fusion"]
    assert f["used"] and f["attention_ops"] == 2 and f["max_abs_vs_unfused"] < 1e-4
    assert p["attention_fusion"] == {"used": False, "why": "quantize.fuse_attention is off"}
    ops, plain_ops = (Counter(n.op_type for n in onnx.load(str(x)).graph.node) for x in (fused, plain))
    assert ops["MultiHeadAttention"] == 2 and plain_ops["MultiHeadAttention"] == 0
    assert plain_ops["QuantizeLinear"] > ops["QuantizeLinear"] and "Softmax" not in ops
    assert sum(ops.values()) < 0.8 * sum(plain_ops.values())
    a, b = OrtModel(fused).predict(splits["test"]), OrtModel(plain).predict(splits["test"])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.97 and r["budget_met"]


def test_a_fusion_that_changes_the_logits_is_not_used(trained, tmp_path, monkeypatch):
    from edgepipe.pipeline import fusion

    _, _, splits, fp32 = trained
    graph, info = fusion.fused_attention(fp32, tmp_path / "f.onnx", splits["val"].head(16))
    assert graph != fp32 and info["used"] and info["fusions"] == {"sdpa": 2, "mha2": 2}
    monkeypatch.setattr(fusion, "ATOL", -1.0)  # any difference at all is too much
    graph, info = fusion.fused_attention(fp32, tmp_path / "f.onnx", splits["val"].head(16))
    assert graph == fp32 and not info["used"] and "fused logits differ" in info["why"]


def export_broken_head(model, splits, path):
    """Pooled feature 5 scaled x1000, the head's weights for it /1000: fp32 logits are unchanged,
    but the head's int8 input scale now rounds every other feature to zero."""
    bad = copy.deepcopy(model)
    ln = bad.encoder.encoder.layer[-1].output.LayerNorm
    with torch.no_grad():
        ln.weight[5] *= 1000
        ln.bias[5] *= 1000
        bad.head.weight[:, 5] /= 1000
    export_onnx(bad, path, splits["test"])
    return path


def test_budget_loop_keeps_the_broken_node_group_in_fp32(trained, tmp_path):
    d, model, splits, fp32_good = trained
    fp32 = export_broken_head(model, splits, tmp_path / "bad.onnx")
    assert np.abs(OrtModel(fp32).predict(splits["val"]) - OrtModel(fp32_good).predict(splits["val"])).max() < 1e-3
    out = tmp_path / "int8.onnx"
    r = quantize(fp32, out, splits["train"], splits["val"], QuantizeConfig(max_accuracy_drop=0.0), seq_len=32)
    assert r["first_try_val_accuracy"] < r["fp32_val_accuracy"] - 0.1
    assert r["sensitivity"][0]["group"] == "head"
    assert r["excluded_node_count"] == 1 and r["mode"] == "static"
    assert r["budget_met"] and r["val_accuracy"] >= r["fp32_val_accuracy"]
    # the head is a Gemm, which ORT's dynamic quantizer does not take: no dynamic try, it ships fp32
    assert [t["shipped"] for t in r["tries"]] == [False] * (len(r["tries"]) - 1) + [True]
    assert r["tries"][-1]["fp32_nodes"] == 1 and "dynamic_matmuls" not in r


def test_mixed_dynamic_gives_the_fp32_matmuls_int8_weights_and_close_outputs(trained, tmp_path):
    from edgepipe.pipeline.quantize import mixed_dynamic, node_groups, preprocess

    _, _, splits, fp32 = trained
    pre = tmp_path / "pre.onnx"
    preprocess(fp32, pre)
    groups = node_groups(onnx.load(str(fp32), load_external_data=False))
    ffn_out = [n for n, g in groups.items() if g.endswith("output.dense") and "attention" not in g]
    ffn_out = [n for n in ffn_out if n in {x.name for x in onnx.load(str(pre)).graph.node if x.op_type == "MatMul"}]
    assert len(ffn_out) == 2  # one per layer of the 2-layer model
    static = tmp_path / "static.onnx"
    reader = CalibrationReader(splits["train"], 64, 32, model=fp32)
    from edgepipe.pipeline.quantize import static_int8

    static_int8(pre, static, reader, QuantizeConfig(), ffn_out, tmp_path / "cache.json")
    out = tmp_path / "mixed.onnx"
    assert mixed_dynamic(static, out, ffn_out) == {"dynamic_matmuls": 2}
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    before = [n.op_type for n in onnx.load(str(static)).graph.node]
    assert ops.count("MatMulInteger") == 2 and "MatMulInteger" not in before
    static_model = onnx.load(str(static))
    inits = {i.name: i for i in static_model.graph.initializer}
    weights = [inits[n.input[1]] for n in static_model.graph.node if n.name in ffn_out]
    elements = sum(int(np.prod(w.dims)) for w in weights)
    # fp32 weights now int8: 3 bytes saved per element, less scales and graph (measured 79 %)
    assert static.stat().st_size - out.stat().st_size > 0.7 * 3 * elements
    ref, got = OrtModel(static).predict(splits["val"]), OrtModel(out).predict(splits["val"])
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.97 and np.abs(ref - got).max() < 0.5


def test_dynamic_int8_is_the_fallback_when_static_cannot_meet_the_budget(trained, tmp_path):
    _, model, splits, _ = trained
    fp32 = export_broken_head(model, splits, tmp_path / "bad.onnx")
    out = tmp_path / "int8.onnx"
    r = quantize(
        fp32,
        out,
        splits["train"],
        splits["val"],
        QuantizeConfig(max_accuracy_drop=0.0, max_excluded_groups=0),
        seq_len=32,
    )
    assert r["excluded_node_count"] == 0 and "dynamic_val_accuracy" in r and "dynamic_val_agreement" in r
    assert r["budget_met"] == r["mode"].startswith("dynamic")
    assert OrtModel(out).predict(splits["val"]).shape == (len(splits["val"]), 2)


def test_bad_calibration_input_and_config():
    split = TokenizedSplit(*(np.zeros((0, 8), np.int64) for _ in range(3)), np.zeros(0, np.int64))
    with pytest.raises(DataError, match="calibration data is empty"):
        CalibrationReader(split, 10, 8)
    ids = np.full((4, 8), -3, np.int64)
    corrupt = TokenizedSplit(ids, np.ones_like(ids), np.zeros_like(ids), np.zeros(4, np.int64))
    with pytest.raises(DataError, match="calibration inputs are corrupt"):
        CalibrationReader(corrupt, 4, 8)
    with pytest.raises(ConfigError, match="quantize.calibration_examples"):
        build_config({"quantize.calibration_examples": 0})
    with pytest.raises(ConfigError, match="entropy calibration fails on all ops"):
        build_config({"quantize.method": "entropy", "quantize.op_types": ["all"]})


def test_a_4_bit_table_that_misses_the_budget_goes_back_to_int8_rows_before_any_layer_does(trained, tmp_path):
    _, _, splits, fp32 = trained
    # a budget nothing meets (built past validation: a negative drop), so every fallback is taken in order
    fields = QuantizeConfig().model_dump() | {"max_accuracy_drop": -1.0, "max_excluded_groups": 0}
    qcfg = QuantizeConfig.model_construct(**fields)
    r = quantize(fp32, tmp_path / "int8.onnx", splits["train"], splits["val"], qcfg, seq_len=32)
    assert r["embedding_fallback"].startswith("int8") and not r["budget_met"]
    # static with 4-bit tables, with int8 rows, then whole-model dynamic with each
    assert [(t["how"][:7], t["embedding_bits"]) for t in r["tries"]] == [
        ("static", 4),
        ("static", 8),
        ("dynamic", 4),
        ("dynamic", 8),
    ]
    assert "sensitivity" not in r  # max_excluded_groups 0: no probes
    # none met the budget: the closest try ships, and the manifest says so
    best = max(r["tries"], key=lambda t: (t["val_accuracy"], t["val_agreement"]))
    assert best["shipped"] and r["shipped"].startswith("the closest try") and r["val_accuracy"] == best["val_accuracy"]
    m = onnx.load(str(tmp_path / "int8.onnx"))
    assert bool([n for n in m.graph.node if n.op_type == "GatherBlockQuantized"]) == (best["embedding_bits"] == 4)


def test_embeddings_quantize_only_matmuls_unless_told():
    from edgepipe import tasks
    from edgepipe.pipeline.quantize import task_op_types

    assert task_op_types(QuantizeConfig(), tasks.get("embedding")) == ["MatMul", "Gemm"]
    assert task_op_types(QuantizeConfig(), tasks.get("sequence_classification")) == ["all"]
    assert task_op_types(QuantizeConfig(method="entropy"), tasks.get("sequence_classification")) == ["MatMul", "Gemm"]
    assert task_op_types(QuantizeConfig(op_types=["all"]), tasks.get("embedding")) == ["all"]


def test_a_dynamic_task_tries_dynamic_int8_first_and_ships_it_within_budget(tiny_teacher, tmp_path):
    """Embeddings (Task.int8_activations == "dynamic"): what the budget search times is what ships."""
    from edgepipe import tasks
    from edgepipe.model.load import load_teacher_dir

    model, _ = load_teacher_dir(tiny_teacher, tasks.get("embedding"))
    ids = np.random.default_rng(0).integers(1000, 2000, (64, 16))
    ones = np.ones_like(ids)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(ids), torch.from_numpy(ones), torch.zeros_like(torch.from_numpy(ids)))
    split = TokenizedSplit(ids, ones, np.zeros_like(ids), ref.numpy())
    fp32 = tmp_path / "fp32.onnx"
    export_onnx(model, fp32, split)
    r = quantize(fp32, tmp_path / "int8.onnx", split, split, QuantizeConfig(), 16, task=tasks.get("embedding"))
    assert [t["how"] for t in r["tries"]] == ["dynamic (the task's int8)"] and r["tries"][0]["shipped"]
    assert r["budget_met"] and r["mode"] == "dynamic (the task's int8)" and r["val_mean_cosine"] > 0.99
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}


def test_a_table_trained_through_the_4_bit_grid_is_stored_exactly(tmp_path):
    """Recovery's int4 grid (edgepipe.model.int4) and the ONNX table writer are one grid: a table left on
    it decodes to itself; inside `int4_tables` the forward pass sees the grid and gradients reach the
    float weights; a table whose width whole blocks do not divide stays float."""
    import torch

    from edgepipe.model.int4 import block_grid, int4_tables
    from edgepipe.pipeline.quantize import int4_blocks

    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"words": torch.nn.Embedding(3000, 64), "types": torch.nn.Embedding(2, 48)})
    before = model["words"].weight.detach().clone()
    with int4_tables(model) as tables:
        assert tables == [model["words"]]
        out = model["words"](torch.tensor([[5, 7]]))
        assert torch.equal(out[0, 0], block_grid(before)[5])
        out.sum().backward()
        grad = model["words"].parametrizations.weight.original.grad
        assert grad[5].abs().sum() > 0 and grad[6].abs().sum() == 0  # straight through, only the rows looked up
    table = model["words"].weight.detach()
    assert torch.equal(table, block_grid(before)) and not torch.equal(table, before)
    q, scale, block = int4_blocks(table.numpy())
    low, high = (q & 15).astype(np.int8) - 8, (q >> 4).astype(np.int8) - 8
    values = np.stack([low, high], -1).reshape(3000, 64 // block, block) * scale.astype(np.float32)[..., None]
    assert block == 32 and np.array_equal(values.reshape(3000, 64), table.numpy())
    assert np.abs(np.stack([low, high])).max() <= 7  # max|value| / 7: the [-7, 7] grid TFLite's quantizer uses
    assert torch.equal(model["types"].weight, model["types"].weight)  # untouched (not parametrized)
    assert not hasattr(model["types"], "parametrizations")
