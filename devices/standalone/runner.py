#!/usr/bin/env python3
"""edgepipe device-side benchmark runner: latency and accuracy of one model, as one JSON object.

Standalone on purpose: it needs only numpy and the runtime (onnxruntime for .onnx/.ort,
ai-edge-litert for .tflite; ExecuTorch's Python runtime for .pte, which needs torch), never
edgepipe, so the same file runs on a laptop, an ARM board or a phone with Python.
Copy it to the device with sensors.py (conditions, heat, energy; standard library only) beside the
model and the eval inputs, then:

    python3 runner.py --model model.onnx --inputs eval/ --threads 1 --warmup 10 --runs 100

`eval/` holds input_ids.npy, attention_mask.npy, token_type_ids.npy (int64, [N, L]) and
labels.npy ([N]; multi-label [N, labels] of 0/1; embeddings: the teacher's [N, dims]; tags: [N, L], -100
where no word starts). Latency runs use batch B of real examples padded to --seq-len (default:
a TFLite model's fixed length, else L); the metric pass (--metric, the task's) runs every
example. Flags and statistics follow TFLite's benchmark_model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass

try:
    import numpy as np
except ImportError:
    sys.exit("runner: numpy is not installed on this device; install it with `pip install numpy`")

try:
    from . import sensors  # imported as edgepipe.devices.standalone.runner (the host adapters)
except ImportError:  # run as a script (or through runpy): sensors.py lies beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import sensors
    except ImportError:
        sys.exit("runner: sensors.py is not beside runner.py; copy both from edgepipe's devices/standalone/")

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=-1) == labels).mean())


def _micro_f1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-label: a label is on where its output is above 0 (the tuned thresholds are in the model)."""
    decisions, truth = outputs > 0, labels > 0.5
    tp = (decisions & truth).sum()
    wrong = (decisions != truth).sum()
    return float(2 * tp / max(1, 2 * tp + wrong))


def mean_cosine(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Embeddings: the mean cosine to the reference (the teacher's fp32 embeddings, shipped as labels.npy)."""
    a, b = outputs.astype(np.float64), labels.astype(np.float64)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return float(((a * b).sum(-1) / norms).mean())


def entity_spans(tags: list[int]) -> set:
    """Entities as (start, end, type) from BIO tag ids laid out O = 0, B = 2i+1, I = 2i+2 (lenient IOB2)."""
    out, start, kind = set(), None, None
    for i, t in enumerate([*tags, 0]):
        if start is not None and (t == 0 or t % 2 == 1 or (t - 1) // 2 != kind):
            out.add((start, i, kind))
            start = None
        if t != 0 and start is None:
            start, kind = i, (t - 1) // 2
    return out


def _entity_f1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Token classification: entity-level F1 over each word's first sub-word (labels -100 elsewhere)."""
    n = min(outputs.shape[1], labels.shape[1])
    tp = found = wanted = 0
    for o, y in zip(outputs[:, :n], labels[:, :n]):
        at = y != -100
        a, b = entity_spans([int(t) for t in o[at].argmax(-1)]), entity_spans([int(t) for t in y[at]])
        tp, found, wanted = tp + len(a & b), found + len(a), wanted + len(b)
    return 2 * tp / (found + wanted) if found + wanted else 1.0


# The tasks' metrics by name, as edgepipe's tasks name them (edgepipe/tasks/: `Task.metric`).
METRICS = {"accuracy": _accuracy, "micro_f1": _micro_f1, "mean_cosine": mean_cosine, "entity_f1": _entity_f1}


def predictions(outputs: np.ndarray, metric: str) -> list:
    """Per example: the predicted class, or (multi-label) the indices of the labels that are on."""
    if metric == "micro_f1":
        return [np.flatnonzero(row > 0).tolist() for row in outputs]
    if metric == "entity_f1":  # per token: the predicted tag id
        return outputs.argmax(axis=-1).tolist()
    if metric == "mean_cosine":  # embeddings: each text's nearest other text
        sims = outputs @ outputs.T
        np.fill_diagonal(sims, -np.inf)
        return sims.argmax(axis=1).tolist()
    return outputs.argmax(axis=-1).tolist()


@dataclass
class LatencyStats:
    """Milliseconds; percentiles by linear interpolation (numpy's default)."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    n: int

    @classmethod
    def from_samples(cls, seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(
            float(p50),
            float(p90),
            float(p99),
            float(ms.mean()),
            float(ms.std()),
            float(ms.min()),
            float(ms.max()),
            len(ms),
        )


class UserError(Exception):
    pass


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown"
    for key in ("model name", "Hardware", "Processor", "cpu model"):
        for line in info.splitlines():
            if line.lower().startswith(key.lower()) and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def emulator() -> str | None:
    """qemu-user passes its QEMU_* settings through to the guest: numbers from such a run are plumbing checks."""
    if any(k.startswith("QEMU_") for k in os.environ) or os.environ.get("EDGEPIPE_EMULATED"):
        return os.environ.get("EDGEPIPE_EMULATED") or "qemu-user"
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM from /proc/self/status where there is one. Not
    getrusage's ru_maxrss: on Linux a process started by fork + exec keeps its parent's high-water mark
    in it (measured: a runner spawned by a 1.5 GB Python reported 1,513 MB; VmHWM said 13 MB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return float("nan")


def memory_now() -> dict[str, float] | None:
    """This process's resident memory now, MB: rss, pss (shared pages split among their users) and uss
    (private pages only: what the process alone costs) from /proc/self/smaps_rollup (Linux >= 4.14,
    Android); None where the OS has no such file (no figure is made up)."""
    fields = {"Rss:": "rss_mb", "Pss:": "pss_mb", "Private_Clean:": "uss_mb", "Private_Dirty:": "uss_mb"}
    out: dict[str, float] = {}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in fields:
                    key = fields[parts[0]]
                    out[key] = out.get(key, 0.0) + int(parts[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return out if {"rss_mb", "pss_mb", "uss_mb"} <= out.keys() else None


def memory_report(before: dict | None, loaded: dict | None, end: dict | None) -> dict:
    """Which figure is which: peak RSS (VmHWM), resident memory before and after loading the model and
    the load's increase, PSS/USS at the end of the timed runs; "not available" where the OS says nothing."""
    report: dict = {"peak_rss_mb": peak_rss_mb(), "source": "/proc/self/smaps_rollup, /proc/self/status VmHWM"}
    if before is None or loaded is None or end is None:
        return report | {"source": "getrusage ru_maxrss", "smaps": "not available on this OS"}
    return report | {
        "rss_before_load_mb": before["rss_mb"],
        "rss_after_load_mb": loaded["rss_mb"],
        "load_increase_mb": loaded["rss_mb"] - before["rss_mb"],
        "rss_end_mb": end["rss_mb"],
        "pss_end_mb": end["pss_mb"],
        "uss_end_mb": end["uss_mb"],
    }


def ort_session_options(threads: int):
    """Sequential, fixed intra-op threads, no spinning (spinning threads were ~2x slower on a busy CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


class OnnxRuntimeModel:
    def __init__(self, path: str, threads: int):
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError(
                "onnxruntime is not installed on this device; install it with `pip install onnxruntime`"
            ) from None
        try:
            self.session = ort.InferenceSession(path, ort_session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UserError(
                f"model {path} cannot be loaded by onnxruntime ({str(e).strip().splitlines()[0][:160]})"
            ) from None
        self.names = [i.name for i in self.session.get_inputs()]
        self.info = {
            "runtime": "onnxruntime",
            "runtime_version": ort.__version__,
            "delegate": "CPUExecutionProvider",
        }

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {k: feeds[k] for k in self.names})[0]


BUCKET_PREFIX = "seq_"  # edgepipe's length signatures: seq_N takes [1, N] (export/tflite.py)


class LiteRTModel:
    """TFLite via ai-edge-litert. Inputs are fixed [1, L]: batches run row by row, padded to L. A model
    with length signatures (`seq_N`, taking [1, N], N < L) runs each row through the shortest one that
    holds the row's width, as an app picks by a text's token count; wider rows take the default."""

    eval_batch = 1  # the metric pass feeds each text at its own length, so each gets its own signature

    def __init__(self, path: str, threads: int):
        try:
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UserError(
                "ai-edge-litert is not installed on this device; install it with `pip install ai-edge-litert`"
            ) from None
        try:
            self.interpreter = Interpreter(path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise UserError(
                f"model {path} cannot be loaded by LiteRT ({str(e).strip().splitlines()[0][:160]})"
            ) from None
        self.inputs = sorted(self.interpreter.get_input_details(), key=lambda d: d["name"])
        self.output = self.interpreter.get_output_details()[0]
        self.seq_len = int(self.inputs[0]["shape"][1])  # fixed: TFLite shapes are static
        self.buckets = self._length_signatures()
        try:
            delegated = any(op["op_name"] == "DELEGATE" for op in self.interpreter._get_ops_details())
        except (AttributeError, KeyError):
            delegated = False
        self.info = {
            "runtime": "litert",
            "runtime_version": getattr(ai_edge_litert, "__version__", "unknown"),
            "delegate": "XNNPACK" if delegated else "none (reference kernels)",
        }
        if self.buckets:
            self.info["length_signatures"] = {name: n for n, name, *_ in self.buckets}

    def _length_signatures(self) -> list[tuple]:
        """(length, name, invoke, its reusable input buffers by name), shortest first, the default signature
        last; [] for a model without length signatures (it runs through the interpreter as before)."""
        try:
            names = list(self.interpreter.get_signature_list())
        except (AttributeError, ValueError):
            return []
        lengths = {
            name: int(name[len(BUCKET_PREFIX) :])
            for name in names
            if name.startswith(BUCKET_PREFIX) and name[len(BUCKET_PREFIX) :].isdigit()
        }
        lengths = {name: n for name, n in lengths.items() if n < self.seq_len}
        if not lengths:
            return []
        # the default too: a live signature runner holds the interpreter, whose own invoke() then refuses to run
        default = next((name for name in names if name not in lengths), None)
        if default is None:
            return []
        found = []
        for name, n in (*lengths.items(), (default, self.seq_len)):
            runner = self.interpreter.get_signature_runner(name)
            ins = runner.get_input_details()
            order = sorted(ins)  # litert-torch names them args_0, args_1, ... in argument order
            output = sorted(runner.get_output_details())[0]
            feeds = {k: np.zeros((1, n), dtype=ins[k]["dtype"]) for k in order}
            found.append((n, name, self._invoker(runner, order, output), feeds))
        return sorted(found, key=lambda b: b[0])

    @staticmethod
    def _invoker(runner, order: list[str], output: str):
        """feeds -> output. SignatureRunner.__call__ resizes and re-allocates its tensors on every call
        (+15-35 us a call, measured: 3 % of the default model's 1 ms); shapes here never change, so after
        one such call only set, invoke and get are needed, through the runner's own wrapper where this
        ai-edge-litert has it (2.3.0 does), else through __call__."""
        wrapper, sub = getattr(runner, "_interpreter_wrapper", None), getattr(runner, "_subgraph_index", None)
        inputs, outputs = getattr(runner, "_inputs", None), dict(getattr(runner, "_outputs", ()))
        if wrapper is None or sub is None or inputs is None or output not in outputs:
            return lambda feeds: runner(**feeds)[output]
        allocated = []

        def invoke(feeds: dict[str, np.ndarray]) -> np.ndarray:
            if not allocated:
                allocated.append(True)
                return runner(**feeds)[output]
            for k in order:
                wrapper.SetTensor(inputs[k], feeds[k], sub)
            wrapper.Invoke(sub)
            return wrapper.GetTensor(outputs[output], sub)

        return invoke

    def signature_for(self, width: int) -> str:
        """The signature a row of `width` tokens runs through."""
        return next(
            (b[1] for b in self.buckets if b[0] >= width), self.buckets[-1][1] if self.buckets else "serving_default"
        )

    def _bucket(self, rows: list[np.ndarray], width: int) -> np.ndarray:
        length, _, invoke, feeds = next(b for b in self.buckets if b[0] >= width)
        for buf, row in zip(feeds.values(), rows):  # reused buffers: np.pad cost 10-20 us an input
            buf[:, :width] = row[:, :width]
            buf[:, width:] = 0
        return invoke(feeds)

    def _one(self, rows: list[np.ndarray]) -> np.ndarray:
        width = min(rows[0].shape[1], self.seq_len)
        out = self._bucket(rows, width) if self.buckets else self._padded(rows)
        return out[:, :width] if out.ndim == 3 else out  # per-token outputs: the row's own positions

    def _padded(self, rows: list[np.ndarray]) -> np.ndarray:
        for detail, row in zip(self.inputs, rows):
            row = row[:, : self.seq_len]
            if row.shape[1] < self.seq_len:
                row = np.pad(row, ((0, 0), (0, self.seq_len - row.shape[1])))
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(row, dtype=detail["dtype"]))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero_point = self.output.get("quantization", (0.0, 0))
        if out.dtype != np.float32 and scale:  # an int8 output: what it means in float
            out = (out.astype(np.float32) - zero_point) * scale
        return out

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(feeds["input_ids"])
        names = INPUTS[: len(self.inputs)]  # a model without token types (DistilBERT) takes the first two
        return np.concatenate([self._one([feeds[k][i : i + 1] for k in names]) for i in range(n)])


def _scan(path: str, needle: bytes, chunk: int = 1 << 20) -> tuple[bytes, bool]:
    """A file's first 8 bytes and whether `needle` occurs in it, read in chunks: reading the whole
    program would count its size in the runner's peak memory."""
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(0)
        tail, found = b"", False
        while not found and (block := f.read(chunk)):
            window = tail + block
            found = needle in window
            tail = window[-len(needle) + 1 :]
    return head, found


class ExecuTorchModel:
    """An ExecuTorch .pte through `executorch.runtime`. Its Python bindings need torch on the device
    (an app links the C++ runtime instead). Programs take any batch and sequence up to the bounds
    they were exported with: longer batches run in chunks, longer rows are cut to the bound."""

    def __init__(self, path: str, threads: int):
        try:
            import executorch.kernels.quantized  # noqa: F401  (the quantized embedding kernels' registration)
            import torch
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime
            from executorch.version import __version__
        except ImportError:
            raise UserError(
                "executorch is not installed on this device; .pte models need torch and the ExecuTorch runtime: "
                "pip install torch==2.13.0 && pip install --no-deps executorch==1.5.1"
            ) from None
        self.torch = torch
        head, delegated = _scan(path, b"XnnpackBackend")
        if head[4:6] != b"ET":  # the flatbuffer's file identifier: "ET" and a two-digit schema version
            raise UserError(f"model {path} is not an ExecuTorch program (no ET header); re-export it")
        portable_lib._unsafe_reset_threadpool(threads)  # XNNPACK's thread pool is process-wide
        try:
            # the Program must outlive its methods (they point into it): kept on self
            self.program = Runtime.get().load_program(path)
            self.method = self.program.load_method("forward")
            meta = self.program.metadata("forward")
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            if "0x:14" in first:  # Error::OperatorMissing
                raise UserError(
                    f"model {path} needs an operator this ExecuTorch runtime ({__version__}) does not have ({first}); "
                    "use the runtime it was exported for, or re-export it with this one"
                ) from None
            raise UserError(
                f"model {path} cannot be loaded by ExecuTorch {__version__} ({first}); the file is truncated, "
                f"corrupt or from an incompatible ExecuTorch version (schema {head[4:8].decode(errors='replace')}): "
                "re-export it with the runtime's version"
            ) from None
        inputs = [meta.input_tensor_meta(i).sizes() for i in range(meta.num_inputs())]
        self.names = INPUTS[: len(inputs)]
        self.max_batch, self.max_seq = int(inputs[0][0]), int(inputs[0][1])
        self.info = {
            "runtime": "executorch",
            "runtime_version": __version__,
            "delegate": "XNNPACK" if delegated else "none (portable kernels)",
        }

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n, outs = len(feeds["input_ids"]), []
        for s in range(0, n, self.max_batch):
            tensors = [
                self.torch.from_numpy(np.ascontiguousarray(feeds[k][s : s + self.max_batch, : self.max_seq], np.int64))
                for k in self.names
            ]
            outs.append(self.method.execute(tensors)[0].numpy())
        return np.concatenate(outs)


def load_model(path: str, threads: int):
    if not os.path.isfile(path):
        raise UserError(f"model file {path} does not exist")
    if path.endswith((".onnx", ".ort")):
        return OnnxRuntimeModel(path, threads)
    if path.endswith(".tflite"):
        return LiteRTModel(path, threads)
    if path.endswith(".pte"):
        return ExecuTorchModel(path, threads)
    raise UserError(f"model {path}: unknown format (expected .onnx, .ort, .tflite or .pte)")


def load_inputs(directory: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    arrays = {}
    for name in (*INPUTS, "labels"):
        path = os.path.join(directory, f"{name}.npy")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"eval input {path} is missing; copy the eval/ folder beside the runner") from None
        except ValueError as e:
            raise UserError(f"eval input {path} is corrupt ({e})") from None
    labels = arrays.pop("labels")
    n = len(labels)
    if any(a.shape[0] != n or a.ndim != 2 for a in arrays.values()):
        raise UserError(f"eval inputs in {directory} disagree in shape; re-export them")
    return arrays, labels


REAL_LENGTHS = 0  # seq_len meaning "as the texts are": each batch trimmed to its longest real row


def padded_batch(arrays: dict[str, np.ndarray], start: int, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """Rows start.. (cycling) padded or cut to `seq_len`, or, with REAL_LENGTHS, trimmed to the longest
    real sequence among them (what an app sending one text at a time feeds a dynamic-length model)."""
    n = len(arrays["input_ids"])
    idx = [(start + i) % n for i in range(batch)]
    if seq_len == REAL_LENGTHS:
        seq_len = max(1, int(arrays["attention_mask"][idx].sum(axis=1).max()))
    out = {}
    for name, a in arrays.items():
        rows = a[idx, :seq_len]
        if rows.shape[1] < seq_len:
            rows = np.pad(rows, ((0, 0), (0, seq_len - rows.shape[1])))
        out[name] = np.ascontiguousarray(rows)
    return out


def measure_latency(model, arrays, warmup: int, runs: int, batch: int, seq_len: int) -> tuple[LatencyStats, float]:
    samples, first_ms = time_runs(model, arrays, warmup, runs, batch, seq_len)
    return LatencyStats.from_samples(samples), first_ms


def run_feeds(arrays, count: int, batch: int, seq_len: int) -> list[dict[str, np.ndarray]]:
    """The batches `count` back-to-back runs cycle through: fixed shapes, at most 64 distinct feeds
    suffice; real lengths, one per run (up to the split's size), so the lengths are the split's."""
    distinct = min(count, len(arrays["input_ids"])) if seq_len == REAL_LENGTHS else min(count, 64)
    return [padded_batch(arrays, i * batch, batch, seq_len) for i in range(max(1, distinct))]


def time_runs(
    model, arrays, warmup: int, runs: int, batch: int, seq_len: int, warmup_ms: list[float] | None = None
) -> tuple[list[float], float]:
    """Seconds per timed run (after one first run and `warmup` untimed ones), and the first run in ms;
    `warmup_ms`, when given, receives each warm-up run's time (the warm-up curve)."""
    feeds = run_feeds(arrays, runs, batch, seq_len)
    first = time.perf_counter()
    model(feeds[0])
    first = time.perf_counter() - first
    for i in range(warmup):
        t0 = time.perf_counter()
        model(feeds[i % len(feeds)])
        if warmup_ms is not None:
            warmup_ms.append((time.perf_counter() - t0) * 1e3)
    samples = []
    for i in range(runs):
        f = feeds[i % len(feeds)]
        t0 = time.perf_counter()
        model(f)
        samples.append(time.perf_counter() - t0)
    return samples, first * 1e3


def sustained_runs(model, arrays, batch: int, seq_len: int, seconds: float, sampler) -> tuple[int, float]:
    """Back-to-back inferences for `seconds` while `sampler` reads the power source: (inferences, wall s).
    Apart from the timed runs: a fuel gauge updates about once a second, so energy needs seconds of work
    however few timed runs were asked for, and the sampler thread must not touch the latency figures."""
    feeds = run_feeds(arrays, 64, batch, seq_len)
    n = 0
    with sampler:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            model(feeds[n % len(feeds)])
            n += 1
        wall = time.perf_counter() - t0
    return n, wall


def model_outputs(model, arrays, n: int, batch: int = 32) -> np.ndarray:
    """The model's outputs on the first `n` examples, each batch trimmed to its longest real sequence."""
    lengths = arrays["attention_mask"][:n].sum(axis=1)
    batch = getattr(model, "eval_batch", batch)
    outs = []
    for s in range(0, n, batch):
        e = min(s + batch, n)
        width = max(1, int(lengths[s:e].max()))
        out = model({k: np.ascontiguousarray(v[s:e, :width]) for k, v in arrays.items()})
        if out.ndim == 3 and out.shape[1] < arrays["input_ids"].shape[1]:  # per-token outputs: pad back
            out = np.pad(out, ((0, 0), (0, arrays["input_ids"].shape[1] - out.shape[1]), (0, 0)))
        outs.append(out)
    return np.concatenate(outs)


def measure_metric(
    model, arrays, labels, metric: str = "accuracy", limit: int | None = None
) -> tuple[float, int, list[int]]:
    """(the task's metric, examples evaluated, predictions)."""
    n = len(labels) if limit is None else min(limit, len(labels))
    outputs = model_outputs(model, arrays, n)
    return METRICS[metric](outputs, labels[:n]), n, predictions(outputs, metric)


def measure_accuracy(model, arrays, labels, batch: int = 32, limit: int | None = None) -> tuple[float, int, list[int]]:
    return measure_metric(model, arrays, labels, "accuracy", limit)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help="folder with input_ids/attention_mask/token_type_ids/labels .npy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="padded length of latency runs (default: the model's, else the inputs'); 0: each text at its own "
        "length (a TFLite model needs length signatures for that)",
    )
    ap.add_argument("--max-eval", type=int, default=None, help="evaluate only the first N examples")
    ap.add_argument("--metric", default="accuracy", choices=sorted(METRICS), help="the task's metric")
    ap.add_argument("--no-accuracy", action="store_true", help="latency only: skip the metric pass")
    ap.add_argument("--predictions", action="store_true", help="include per-example predicted labels")
    ap.add_argument("--output", help="also write the JSON here")
    ap.add_argument("--cool-below", type=float, default=None, help="first wait until the device reads below C degrees")
    ap.add_argument("--cool-timeout", type=float, default=300.0, help="seconds the cool-down may take at most")
    ap.add_argument("--warm-margin", type=float, default=5.0, help="flag the run if it warmed the device by more (C)")
    ap.add_argument("--energy-hz", type=float, default=10.0, help="power readings per second; 0: no energy figure")
    ap.add_argument("--energy-s", type=float, default=3.0, help="seconds of back-to-back inferences for energy")
    ap.add_argument("--idle-s", type=float, default=1.0, help="seconds of idle power sampled before loading")
    ap.add_argument("--external-meter", action="store_true", help="keep battery energy valid while plugged in")
    args = ap.parse_args(argv)
    try:
        if (
            args.threads < 1
            or args.runs < 1
            or args.warmup < 0
            or args.batch < 1
            or (args.seq_len is not None and args.seq_len < 0)
        ):
            raise UserError("--threads, --runs, --batch must be >= 1 and --warmup, --seq-len >= 0")
        if min(args.energy_hz, args.energy_s, args.idle_s, args.cool_timeout, args.warm_margin) < 0:
            raise UserError("--energy-hz, --energy-s, --idle-s, --cool-timeout and --warm-margin must be >= 0")
        cool = (
            sensors.cool_down(args.cool_below, args.cool_timeout)
            if args.cool_below is not None
            else sensors.NO_COOL_DOWN
        )
        conditions = sensors.conditions()
        power = sensors.power_source() if args.energy_hz > 0 else None
        idle = sensors.sample_idle(power[1], args.idle_s, args.energy_hz) if power and args.idle_s > 0 else None
        thermal_before = sensors.thermal_snapshot()
        before = memory_now()
        t0 = time.perf_counter()
        model = load_model(args.model, args.threads)
        init_ms = (time.perf_counter() - t0) * 1e3
        loaded = memory_now()
        arrays, labels = load_inputs(args.inputs)
        fixed = getattr(model, "seq_len", None)
        # a TFLite model's lengths: its own, and with length signatures each of theirs and the texts' own
        lengths = [b[0] for b in getattr(model, "buckets", ())] or [fixed]
        allowed = (None, *lengths, *((REAL_LENGTHS,) if len(lengths) > 1 else ()))
        if fixed is not None and args.seq_len not in allowed:
            said = ", ".join(map(str, lengths[:-1])) + (" or " if len(lengths) > 1 else "") + str(lengths[-1])
            raise UserError(
                f"model {os.path.basename(args.model)} takes sequences of {said} tokens (TFLite shapes are fixed); --seq-len {args.seq_len} does not match"
            )
        seq_len = args.seq_len if args.seq_len is not None else fixed or arrays["input_ids"].shape[1]
        warmup_ms: list[float] = []
        samples, first_ms = time_runs(model, arrays, args.warmup, args.runs, args.batch, seq_len, warmup_ms)
        end = memory_now()
        thermal_after = sensors.thermal_snapshot()  # what the latencies were measured in
        if power:
            sampler = sensors.PowerSampler(power[1], args.energy_hz)
            inferences, energy_wall = sustained_runs(model, arrays, args.batch, seq_len, args.energy_s, sampler)
        stats = LatencyStats.from_samples(samples)
        result = {
            "model": os.path.basename(args.model),
            "model_bytes": os.path.getsize(args.model),
            **model.info,
            "threads": args.threads,
            "batch": args.batch,
            "seq_len": seq_len,
            "warmup": args.warmup,
            "init_ms": init_ms,
            "first_inference_ms": first_ms,
            "warmup_ms": [round(x, 4) for x in warmup_ms],
            "latency_ms": asdict(stats),
            "latency_samples_ms": [round(x * 1e3, 4) for x in samples],
            "metric": args.metric,
            "metric_value": None,
            "accuracy": None,
            "n_eval": 0,
        }
        if not args.no_accuracy:
            value, n, preds = measure_metric(model, arrays, labels, args.metric, limit=args.max_eval)
            result["metric_value"], result["n_eval"] = value, n
            result["accuracy"] = value if args.metric == "accuracy" else None
            if args.predictions:
                result["predictions"] = preds
        result.update(
            machine=platform.machine(),
            cpu=cpu_model(),
            cpu_count=os.cpu_count(),
            emulated=emulator(),
            python=platform.python_version(),
            numpy=np.__version__,
            memory=memory_report(before, loaded, end),  # peak: over the whole run, metric pass included
        )
        result["peak_rss_mb"] = result["memory"]["peak_rss_mb"]
        meminfo = sensors.dumpsys_meminfo(os.getpid())  # Android only: the OS's own view of this process
        if meminfo is not None:
            result["memory"]["dumpsys_meminfo"] = meminfo
        result["conditions"] = conditions | {"load_avg_end": sensors.load_average()}
        result["thermal"] = sensors.thermal_record(
            cool, thermal_before, thermal_after, args.warm_margin, args.cool_below, args.cool_timeout
        )
        result["energy"] = (
            sensors.energy_report(
                power[0],
                args.energy_hz,
                sampler,
                idle,
                energy_wall,
                inferences,
                conditions["power"]["charging"],
                args.external_meter,
            )
            if power
            else {
                "valid": False,
                "reason": sensors.NA
                + (
                    " (no hwmon power rail or battery current/voltage)"
                    if args.energy_hz > 0
                    else " (bench.energy.sample_hz is 0)"
                ),
            }
        )
    except UserError as e:
        print(f"runner: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, allow_nan=True)
    if args.output:
        with open(args.output + ".tmp", "w") as f:
            f.write(text)
        os.replace(args.output + ".tmp", args.output)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
