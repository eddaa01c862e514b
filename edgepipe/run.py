"""`compress-and-export`: wire the stages together into one resumable run.

Each stage's key hashes the config it reads and its upstream keys, so a changed
setting reruns exactly what depends on it; everything else is reused after its
files pass a sha256 check. The manifest is rewritten (atomically) after every stage,
so a run that fails later keeps what it finished.
"""

from __future__ import annotations

import json
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgepipe
from edgepipe import distributed
from edgepipe.config import RunConfig, flatten_tree, build_config, config_to_dict
from edgepipe.distributed import SINGLE, Dist
from edgepipe.devices import open_locked
from edgepipe.devices.spec import parse_device
from edgepipe.errors import DeviceError, ModelError, RunDirError
from edgepipe.modeling import Classifier, load_classifier, save_classifier
from edgepipe.progress import Progress, Silent
from edgepipe.report import write_report
from edgepipe.rundir import RunDir, atomic_path, sha256_file, stable_hash, write_bytes_atomic, write_json_atomic
from edgepipe.export.onnx import check_parity, export_onnx
from edgepipe.runtimes.onnxruntime import OrtModel
from edgepipe.pipeline.data import Dataset, TokenizedSplit, load_dataset
from edgepipe.pipeline.distill import distill
from edgepipe.pipeline.teacher import load_tokenizer, prepare_teacher, teacher_source
from edgepipe.pipeline.train import accuracy, predict

MANIFEST = "manifest.json"


def environment(cfg: RunConfig) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        **{name: _version(name) for name in ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "tflite-support")},
        "train_threads": cfg.threads,
    }


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class Run:
    """State of one `compress-and-export` invocation: config, run dir, manifest so far."""

    def __init__(self, cfg: RunConfig, rundir: RunDir, cache_dir: Path, progress: Progress, dist: Dist = SINGLE):
        self.cfg, self.dir, self.cache_dir, self.progress, self.dist = cfg, rundir, cache_dir, progress, dist
        self.manifest: dict[str, Any] = {
            "version": edgepipe.__version__,
            "config": config_to_dict(cfg),
            "seed": cfg.seed,
            "environment": environment(cfg),
            "dataset": {},
            "models": {},
            "benchmarks": [],
            "timings": {},
        }
        self.devices: dict[str, Any] = {}
        self.lock = threading.RLock()  # device workers update the manifest side by side

    def save_manifest(self) -> None:
        if self.dist.main:
            with self.lock:
                write_json_atomic(self.dir.path(MANIFEST), self.manifest)

    def stage(self, name: str, key: str, compute, mode: str = "main") -> dict[str, Any]:
        """A resumable stage. With several training processes (edgepipe.distributed), `mode` says who runs it:
        "main": rank 0 computes and records, the others wait and read the record; "all": every rank computes
        (a training stage), rank 0 records; "local": only the calling process, no waiting (rank-0-only work)."""
        t0 = time.perf_counter()
        d = self.dist
        if not d.active or mode == "local":
            result, reused = self.dir.stage(name, key, compute)
        elif mode == "all":
            hit = self.dir.cached(name, key) if d.main else None  # hashes the stage's files: once, on rank 0
            reused = d.broadcast(hit is not None)
            if reused:
                result = hit if d.main else self.dir.cached(name, key)
            else:
                result, files = compute()
                if d.main:
                    self.dir.record(name, key, result, files)
            d.barrier()
        else:
            if d.main:
                result, reused = self.dir.stage(name, key, compute)
            d.barrier()
            if not d.main:
                result, reused = self.dir.cached(name, key), True
        seconds = round(time.perf_counter() - t0, 2)
        with self.lock:
            self.manifest["timings"][name] = {"seconds": seconds, "reused": reused}
        self.progress.log(f"[green]✓[/green] {name}" + (" [dim](reused)[/dim]" if reused else f" [dim]({seconds:.1f} s)[/dim]"))
        return result

    def artifact(self, path: Path, **extra: Any) -> dict[str, Any]:
        return {"path": self.dir.rel(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)} | extra

    # -- stages ---------------------------------------------------------------

    def eval_inputs(self, name: str, splits: dict[str, TokenizedSplit], data_key: str) -> Path:
        """The pre-tokenized test split as .npy files, what a device runner reads."""
        directory = self.dir.path(f"data/{name}")
        self.stage(f"eval_inputs_{name}", data_key, lambda: ({"n": len(splits["test"])}, splits["test"].save(directory)))
        return directory

    def soft_targets(self, teacher: Classifier, teacher_key: str, train: TokenizedSplit, data_key: str) -> torch.Tensor:
        """The teacher's eval-mode logits on the training split: computed once, shared by distill, prune and recovery."""
        path = self.dir.path("data/teacher_train_logits.npy")

        def compute():
            logits = predict(teacher, train, progress=self.progress, description="teacher soft targets")
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, logits)
            return {"n": len(logits)}, [path]

        self.stage("soft_targets", stable_hash({"teacher": teacher_key, "data": data_key}), compute)
        return torch.from_numpy(np.load(path, allow_pickle=False))

    def evaluate(self, role: str, model: Classifier, model_key: str, splits: dict[str, TokenizedSplit]) -> dict[str, Any]:
        def compute():
            result = {}
            for split in ("val", "test"):
                logits = predict(model, splits[split], progress=self.progress, description=f"evaluate {role} ({split})")
                result[f"{split}_accuracy"] = accuracy(logits, splits[split].labels)
            return result, []

        return self.stage(f"eval_{role}", stable_hash({"model": model_key, "data": splits_key(splits)}), compute)

    def record_model(self, role: str, model: Classifier, key: str, splits: dict[str, TokenizedSplit], report: dict[str, Any], checkpoint: Path | None = None) -> None:
        """The manifest entry of a model: size facts, PyTorch accuracy, its stage report; artifacts follow."""
        ev = self.evaluate(role, model, key, splits)
        entry = model.describe(self.cfg.bench.seq_len) | {"accuracy": ev["test_accuracy"], "val_accuracy": ev["val_accuracy"]} | report
        if checkpoint is not None:
            entry["checkpoint"] = self.dir.rel(checkpoint)
        self.manifest["models"][role] = entry | {"artifacts": {}}
        self.save_manifest()

    def export(self, role: str, model: Classifier, model_key: str, splits: dict[str, TokenizedSplit]) -> dict[str, Any]:
        path = self.dir.path(f"onnx/{role}.fp32.onnx")
        ecfg = self.cfg.export

        def compute():
            export_onnx(model, path, splits["test"], opset=ecfg.opset)
            parity = check_parity(model, path, splits["test"], ecfg.parity_atol)
            return parity | {"opset": ecfg.opset}, [path]

        key = stable_hash({"model": model_key, "export": ecfg.model_dump(include={"opset", "parity_atol"})})  # only what it reads
        result = self.stage(f"export_{role}_onnx_fp32", key, compute)
        return self.artifact(path, **result)

    def quantize_onnx(self, role: str, splits: dict[str, TokenizedSplit]) -> dict[str, Any]:
        """Static int8 of the role's fp32 ONNX, calibrated on training examples, budget checked on val."""
        from edgepipe.pipeline.quantize import quantize

        fp32 = self.manifest["models"][role]["artifacts"]["onnx_fp32"]
        path = self.dir.path(f"onnx/{role}.int8.onnx")
        qcfg = self.cfg.quantize
        key = stable_hash({"fp32": fp32["sha256"], "quantize": qcfg.model_dump(), "data": splits_key(splits), "seq_len": self.cfg.bench.seq_len})

        def compute():
            report = quantize(self.dir.path(fp32["path"]), path, splits["train"], splits["val"], qcfg, self.cfg.bench.seq_len, self.progress)
            test = splits["test"]
            q_logits = OrtModel(path).predict(test)
            f_logits = OrtModel(self.dir.path(fp32["path"])).predict(test)
            report |= {
                "test_accuracy": accuracy(q_logits, test.labels),
                "fp32_test_accuracy": accuracy(f_logits, test.labels),
                "argmax_agreement": float((q_logits.argmax(1) == f_logits.argmax(1)).mean()),
                "size_ratio_vs_fp32": round(fp32["bytes"] / path.stat().st_size, 3),
            }
            return report, [path]

        return self.artifact(path, **self.stage(f"quantize_{role}_onnx_int8", key, compute))

    def export_tflite(self, role: str, model: Classifier, model_key: str, splits: dict[str, TokenizedSplit]) -> None:
        """fp32 (parity vs PyTorch) and int8 (accuracy and agreement vs fp32 on the test split)."""
        from edgepipe.export import tflite
        from edgepipe.runtimes.litert import LiteRTModel

        tflite.require_litert_torch()
        seq, arts = self.cfg.bench.seq_len, self.manifest["models"][role]["artifacts"]
        fp32, int8 = self.dir.path(f"tflite/{role}.fp32.tflite"), self.dir.path(f"tflite/{role}.int8.tflite")
        key = stable_hash({"model": model_key, "seq_len": seq, "export": self.cfg.export.model_dump(include={"parity_atol"})})

        def compute_fp32():
            tflite.export_tflite_fp32(model, fp32, splits["test"], seq)
            return tflite.check_tflite_parity(model, fp32, splits["test"], seq, self.cfg.export.parity_atol) | {"seq_len": seq}, [fp32]

        arts["tflite_fp32"] = self.artifact(fp32, **self.stage(f"export_{role}_tflite_fp32", key, compute_fp32))
        self.save_manifest()
        n_cal = self.cfg.quantize.calibration_examples

        def compute_int8():
            report = tflite.export_tflite_int8(model, int8, splits["train"], seq, n_cal)
            test = splits["test"]
            f_logits = LiteRTModel(fp32).predict(test)
            q_logits = LiteRTModel(int8).predict(test)
            report |= {
                "seq_len": seq,
                "test_accuracy": accuracy(q_logits, test.labels),
                "fp32_test_accuracy": accuracy(f_logits, test.labels),
                "argmax_agreement": float((q_logits.argmax(1) == f_logits.argmax(1)).mean()),
                "size_ratio_vs_fp32": round(fp32.stat().st_size / int8.stat().st_size, 3),
            }
            return report, [int8]

        int8_key = stable_hash({"fp32": key, "calibration_examples": n_cal, "data": splits_key(splits)})
        arts["tflite_int8"] = self.artifact(int8, **self.stage(f"export_{role}_tflite_int8", int8_key, compute_int8))
        self.save_manifest()

    def app_artifacts(self, role: str, splits: dict[str, TokenizedSplit], tokenizer_dir: Path) -> None:
        """ORT-format model for ORT Mobile and one app bundle per target, for the shipped model."""
        from edgepipe.export.bundle import APP_CHECK, write_bundle
        from edgepipe.export.ort_format import to_ort_format

        arts = self.manifest["models"][role]["artifacts"]
        labels = self.manifest["dataset"]["labels"]
        seq = self.cfg.bench.seq_len
        if "onnx_int8" in arts:
            src = arts["onnx_int8"]
            ort_path = self.dir.path(f"ort/{role}.int8.ort")

            def compute_ort():
                report = to_ort_format(self.dir.path(src["path"]), ort_path)
                test = splits["test"]
                a, b = OrtModel(self.dir.path(src["path"])).predict(test), OrtModel(ort_path).predict(test)
                report |= {"max_abs_vs_onnx": float(np.abs(a - b).max()), "argmax_agreement_vs_onnx": float((a.argmax(1) == b.argmax(1)).mean()),
                           "test_accuracy": accuracy(b, test.labels)}  # fmt: skip
                return report, [ort_path, ort_path.with_suffix(".required_operators.config")]

            arts["ort"] = self.artifact(ort_path, **self.stage(f"export_{role}_ort", stable_hash({"onnx": src["sha256"]}), compute_ort))
        lowercase = bool(getattr(load_tokenizer(tokenizer_dir), "do_lower_case", True))
        bundles = self.manifest.setdefault("bundles", {})
        for target, name in (("tflite", "tflite_int8"), ("ort", "ort")):
            if name not in arts:
                continue
            art = arts[name]
            directory = self.dir.path(f"bundles/{target}")
            model_file = self.dir.path(art["path"])
            extra = [model_file.with_suffix(".required_operators.config")] if target == "ort" else []
            facts = {"precision": "int8", "test_accuracy": art.get("test_accuracy"), "source_model": role}

            def compute_bundle(directory=directory, model_file=model_file, extra=extra, facts=facts):
                files = write_bundle(
                    directory, model_file, tokenizer_dir / "vocab.txt", labels, lowercase, seq, facts, extra, self.cfg.export.tflite_metadata
                )
                return {"path": self.dir.rel(directory), "files": sorted(f.name for f in files)}, files

            key = stable_hash({"model": art["sha256"], "labels": labels, "vocab": sha256_file(tokenizer_dir / "vocab.txt"), "seq": seq,
                               "edgepipe": edgepipe.__version__, "app_check": sha256_file(APP_CHECK), "metadata": self.cfg.export.tflite_metadata})  # fmt: skip
            bundles[target] = self.stage(f"bundle_{target}", key, compute_bundle)
        self.save_manifest()

    def importance(self, student: Classifier, student_key: str, soft_targets: torch.Tensor, train: TokenizedSplit):
        """Head/FFN importance of the student, computed once for the prune stage and the budget search."""
        from edgepipe.pipeline.prune import importance

        def compute():
            heads, ffn = importance(student, soft_targets, self.cfg, train, self.progress)
            return {"heads": [h.tolist() for h in heads], "ffn": [f.tolist() for f in ffn]}, []

        key = stable_hash({"student": student_key, "prune": self.cfg.prune.model_dump(include={"importance", "importance_batches"}),
                           "distill": self.cfg.distill.model_dump(include={"temperature", "alpha", "batch_size"}), "seed": self.cfg.seed,
                           "threads": self.cfg.threads})  # fmt: skip
        r = self.stage("importance", key, compute)
        return [np.asarray(h, dtype=np.float32) for h in r["heads"]], [np.asarray(f, dtype=np.float32) for f in r["ffn"]]

    def search(self, student: Classifier, scores, dataset: Dataset, splits: dict[str, TokenizedSplit], tokenizer, source: Path, soft_targets: torch.Tensor, data_key: str):
        """Budget search on the target device; records `search` in the manifest even when it fails."""
        from edgepipe.errors import BudgetError
        from edgepipe.pipeline import prune as P
        from edgepipe.pipeline.search import SearchData, search

        s, device = self.cfg.search, self.cfg.search_device
        kept = vocab_splits = None
        if True in s.vocab:
            kept, _, vocab_tokenizer = P.corpus_vocabulary(tokenizer, dataset.texts["train"], source, self.dir.path("search/vocab"))
            vocab_splits = dataset.tokenize(vocab_tokenizer, self.cfg.data.max_length)
        rows = min(len(kept) if kept else student.config.vocab_size, student.config.vocab_size)
        test = splits["test"]
        latency_inputs = self.dir.path("data/search_latency")
        n = min(len(test), 256)
        TokenizedSplit(np.minimum(test.input_ids[:n], rows - 1), test.attention_mask[:n], test.token_type_ids[:n], test.labels[:n]).save(latency_inputs)
        data = SearchData(splits["train"], splits["val"], vocab_splits and vocab_splits["train"], vocab_splits and vocab_splits["val"], kept,
                          soft_targets, latency_inputs, stable_hash({"data": data_key, "vocab": splits_key(vocab_splits) if vocab_splits else None}))  # fmt: skip
        latency_only = self.cfg.bench.model_copy(update={"accuracy": False})

        def measure(path: Path) -> dict[str, Any]:
            return self.device(device).benchmark(path, latency_inputs, latency_only)

        try:
            plan, fmt, report = search(student, scores, self.cfg, data, lambda n, k, c: self.stage(n, k, c, mode="local"), measure, device, self.dir.path("search/work"), self.progress)
        except BudgetError as e:
            self.manifest["search"] = e.report
            self.save_manifest()
            raise
        self.manifest["search"] = report
        self.save_manifest()
        c = report["chosen"]
        self.progress.log(f"[green]✓[/green] search: {c['plan']} as {c['format']}, {c['latency_ms']:.2f} ms, {c['size_mb']:.1f} MB, "
                          f"val accuracy ≈ {c['accuracy'] * 100:.1f}% ({len(report['candidates'])} candidates, {report['seconds']:.0f} s)")  # fmt: skip
        return plan, fmt

    def search_outcome(self) -> None:
        """The fully trained plan, measured: does the shipped artifact meet the budget on the device?"""
        from edgepipe.pipeline.search import misses

        report = self.manifest.get("search")
        if not report or not report.get("chosen"):
            return
        fmt, device = report["chosen"]["format"], report["device"]
        art = self.manifest["models"].get("pruned", {}).get("artifacts", {}).get(fmt)
        bench = [b for b in self.manifest["benchmarks"] if b["device"] == device and b["model"] == "pruned" and b["artifact"] == fmt and b["threads"] == self.cfg.bench.threads]
        if art is None or not bench:
            report["final"] = None
            return
        val = art.get("val_accuracy", self.manifest["models"]["pruned"].get("val_accuracy"))  # int8 ONNX has its own; others: PyTorch's
        row = {"latency_ms": bench[0]["latency_ms"]["p50"], "size_mb": round(art["bytes"] / 1e6, 3), "val_accuracy": val, "test_accuracy": art.get("test_accuracy")}
        row["misses"] = misses(row | {"accuracy": val}, self.cfg.search, "latency_ms", "accuracy")
        row["meets_budget"] = not row["misses"]
        report["final"] = row
        if row["misses"]:
            self.progress.log(f"[yellow]![/yellow] the fully trained plan misses the budget on {device}: {'; '.join(row['misses'].values())}")

    def device(self, text: str):
        """Locked (one edgepipe run per device), connected on first use and kept for the run:
        a fully resumed run never dials a board."""
        if text not in self.devices:
            self.devices[text] = open_locked(text, self.cfg.bench, log=self.progress.log)
        return self.devices[text][0]

    def close_devices(self) -> None:
        for device, lock in self.devices.values():
            try:
                device.close()
            finally:
                lock.release()
        self.devices.clear()

    def benchmark_all(self, jobs: list[tuple[str, str, dict[str, Any], Path, str]]) -> None:
        """Every (role, artifact, artifact record, inputs, inputs key) on every device.

        One worker thread per device (`bench.parallel_devices`): a device runs one model at a
        time, devices run side by side. A device that fails does not stop the others; the first
        failure is raised once they have all finished, their results already in the manifest.
        Here the workers only wait on SSH/adb; under the emulated test rig they share this CPU.
        """
        from concurrent.futures import ThreadPoolExecutor

        bcfg = self.cfg.bench
        jobs = [j for j in jobs if (bcfg.artifacts is None or j[1] in bcfg.artifacts) and (bcfg.models is None or j[0] in bcfg.models)]
        failures: dict[str, DeviceError] = {}
        sessions: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()

        def work(text: str) -> None:
            start = time.perf_counter()
            try:
                for job in jobs:
                    self._benchmark_one(text, *job)
            except DeviceError as e:
                failures[text] = e
            sessions[text] = {"seconds": round(time.perf_counter() - start, 2), "ok": text not in failures,
                              "error": str(failures[text]) if text in failures else None}  # fmt: skip

        if bcfg.side_by_side:
            with ThreadPoolExecutor(max_workers=len(bcfg.devices), thread_name_prefix="device") as pool:
                for future in [pool.submit(work, text) for text in bcfg.devices]:
                    future.result()  # re-raises what is not a device failure (a bug)
        else:
            for text in bcfg.devices:
                work(text)
        with self.lock:  # how the devices were driven: for "fleet wall time vs the sum of its devices"
            self.manifest["device_sessions"] = {"parallel": bcfg.side_by_side, "wall_s": round(time.perf_counter() - t0, 2),
                                                "devices": {t: sessions[t] for t in bcfg.devices if t in sessions}}  # fmt: skip
        if failures:
            (name, first), *others = failures.items()
            ok = [t for t in bcfg.devices if t not in failures]
            if others or ok:
                first = DeviceError(f"{first}" + (f"; also failed: {', '.join(t for t, _ in others)}" if others else "")
                                    + (f"; {', '.join(ok)} finished" if ok else ""))  # fmt: skip
            raise first

    def _benchmark_one(self, text: str, role: str, artifact_name: str, artifact: dict[str, Any], inputs: Path, inputs_key: str) -> None:
        bcfg = self.cfg.bench
        spec = parse_device(text)
        key = stable_hash({"artifact": artifact["sha256"], "inputs": inputs_key, "bench": bcfg.measurement(), "device": spec.text})
        model_path = self.dir.path(artifact["path"])

        def compute():
            device = self.device(text)
            if bcfg.side_by_side:  # one live progress bar at a time: workers log lines instead
                self.progress.log(f"benchmark {role} {artifact_name} on {text} …")
                return device.benchmark(model_path, inputs, bcfg), []
            for _ in self.progress.track([None], 1, f"benchmark {role} {artifact_name} on {text}"):
                result = device.benchmark(model_path, inputs, bcfg)
            return result, []

        # one record per BENCH_IDENTITY: `edgepipe bench --threads 2` must not overwrite the threads=1 result
        name = f"bench_{spec.slug}_{role}_{artifact_name}_t{bcfg.threads}_b{bcfg.batch}_s{bcfg.seq_len}" + (f"_n{bcfg.max_eval}" if bcfg.max_eval else "")
        r = self.stage(name, key, compute)
        entry = {k: r.get(k) for k in BENCH_FIELDS} | {"model": role, "artifact": artifact_name, "artifact_sha256": artifact["sha256"]}
        tags = bcfg.tags(text)
        if tags:
            entry["device_info"] = (entry.get("device_info") or {}) | {"tags": tags}
        with self.lock:
            _upsert(self.manifest["benchmarks"], entry, replace=True)
            self.save_manifest()

    def keep_benchmarks(self, earlier: list[dict[str, Any]]) -> None:
        """Carry over earlier results (other devices, thread counts) whose artifact is still byte-identical."""
        shas = {(role, name): a["sha256"] for role, m in self.manifest["models"].items() for name, a in m.get("artifacts", {}).items()}
        for b in earlier:
            if shas.get((b.get("model"), b.get("artifact"))) == b.get("artifact_sha256"):
                _upsert(self.manifest["benchmarks"], b, replace=False)


BENCH_FIELDS = ("device", "device_info", "runtime", "runtime_version", "delegate", "threads", "seq_len", "batch",
                "latency_ms", "latency_samples_ms", "accuracy", "n_eval", "init_ms", "first_inference_ms", "peak_rss_mb")  # fmt: skip
BENCH_IDENTITY = ("device", "model", "artifact", "threads", "batch", "seq_len", "n_eval")


def _upsert(rows: list[dict[str, Any]], entry: dict[str, Any], replace: bool) -> None:
    """One row per (device, model, artifact, threads, batch, seq_len)."""
    for i, row in enumerate(rows):
        if all(row.get(k) == entry.get(k) for k in BENCH_IDENTITY):
            if replace:
                rows[i] = entry
            return
    rows.append(entry)


def splits_key(splits: dict[str, TokenizedSplit]) -> str:
    import hashlib

    h = hashlib.sha256()
    for name in sorted(splits):
        for arr in splits[name].arrays().values():
            h.update(arr.tobytes())
    return h.hexdigest()


def compress_and_export(cfg: RunConfig, out: Path, cache_dir: Path, progress: Progress = Silent()) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    if cfg.export.tflite:
        from edgepipe.export.tflite import require_litert_torch

        require_litert_torch(import_it=False)  # fail before hours of training, not after
        if cfg.export.tflite_metadata:
            from edgepipe.export.tflite_metadata import require_tflite_support

            require_tflite_support()
    dist = distributed.init_from_env()
    if not dist.main:
        progress = Silent()
        dist.barrier()  # rank 0 creates and locks the run dir first
    with RunDir(out, writer=dist.main) as rundir:
        if dist.main:
            dist.barrier()
        run = Run(cfg, rundir, cache_dir, progress, dist)
        if dist.main:
            write_bytes_atomic(rundir.path("config.yaml"), _yaml(config_to_dict(cfg)))

        dataset, data_report = load_dataset(cfg.data)
        run.manifest["dataset"] = data_report
        source = teacher_source(cfg.teacher.path)
        tokenizer = load_tokenizer(source)
        splits = dataset.tokenize(tokenizer, cfg.data.max_length)
        data_key = splits_key(splits)
        inputs = {"teacher": run.eval_inputs("test", splits, data_key)}
        inputs["student"] = inputs["teacher"]
        run.save_manifest()

        # teacher -------------------------------------------------------------
        teacher, teacher_report = prepare_teacher(cfg, dataset, splits["train"], cache_dir, progress)
        teacher_key = teacher_report.get("cache_key") or teacher_report["source_fingerprint"]
        progress.log("[green]✓[/green] teacher" + (" [dim](cached)[/dim]" if teacher_report.get("cache_hit", True) else ""))
        run.record_model("teacher", teacher, teacher_key, splits, teacher_report)
        soft_targets = run.soft_targets(teacher, teacher_key, splits["train"], data_key)

        # student -------------------------------------------------------------
        student_dir = rundir.path("student")
        processes = {"processes": dist.world} if dist.active else {}
        student_key = stable_hash(
            {"teacher": teacher_key, "data": data_key, "student": cfg.student.model_dump(), "distill": cfg.distill.model_dump(), "seed": cfg.seed, "threads": cfg.threads}
            | processes
        )

        def train_student():
            student, report = distill(teacher, cfg, splits["train"], progress, teacher_logits=soft_targets)
            return report, save_classifier(student, student_dir, tokenizer_dir=source) if dist.main else []

        s_report = run.stage("distill", student_key, train_student, mode="all")
        student = load_classifier(student_dir)
        run.record_model("student", student, student_key, splits, s_report, student_dir / "model.safetensors")
        models = {"teacher": (teacher, teacher_key, splits), "student": (student, student_key, splits)}

        scores = run.importance(student, student_key, soft_targets, splits["train"]) if cfg.prune.enabled else None
        if cfg.search.active:
            overrides = None
            if dist.main:
                try:
                    overrides = run.search(student, scores, dataset, splits, tokenizer, source, soft_targets, data_key)[0].prune_overrides()
                finally:
                    run.close_devices()
            cfg = build_config(flatten_tree(config_to_dict(cfg)), dist.broadcast(overrides))
            run.cfg = cfg

        # pruned --------------------------------------------------------------
        if cfg.prune.enabled:
            pruned_dir = rundir.path("pruned")
            pruned_key = stable_hash(
                {"student": student_key, "prune": cfg.prune.model_dump(), "distill": cfg.distill.model_dump(), "seed": cfg.seed, "threads": cfg.threads}
                | processes
            )
            p_report = run.stage(
                "prune",
                pruned_key,
                lambda: prune_stage(student, soft_targets, cfg, dataset, splits["train"], tokenizer, source, pruned_dir, progress, scores, dist.main),
                mode="all",
            )
            pruned = load_classifier(pruned_dir)
            p_splits = dataset.tokenize(load_tokenizer(pruned_dir), cfg.data.max_length)
            inputs["pruned"] = run.eval_inputs("test_pruned", p_splits, splits_key(p_splits))
            run.record_model("pruned", pruned, pruned_key, p_splits, p_report, pruned_dir / "model.safetensors")
            models["pruned"] = (pruned, pruned_key, p_splits)

        # training is over: the other ranks leave, rank 0 carries on alone
        if dist.active:
            dist.close()
            run.dist = SINGLE
            if not dist.main:
                return None

        # export and benchmark ------------------------------------------------
        for role, (model, key, role_splits) in models.items():
            run.manifest["models"][role]["artifacts"]["onnx_fp32"] = run.export(role, model, key, role_splits)
            run.save_manifest()
        if cfg.quantize.enabled:
            for role in cfg.quantize.targets:
                if role in models:
                    run.manifest["models"][role]["artifacts"]["onnx_int8"] = run.quantize_onnx(role, models[role][2])
                    run.save_manifest()
        if cfg.export.tflite:
            for role in cfg.export.tflite_targets:
                if role in models:
                    run.export_tflite(role, *models[role])
        ship = "pruned" if "pruned" in models else "student"
        run.app_artifacts(ship, models[ship][2], pruned_dir if ship == "pruned" and cfg.prune.vocab else source)
        earlier = _earlier_benchmarks(rundir.path(MANIFEST))
        jobs = []
        for role in models:
            eval_inputs = {"path": rundir.rel(inputs[role]), "key": splits_key(models[role][2])}
            run.manifest["models"][role]["eval_inputs"] = eval_inputs
            jobs += [(role, name, art, inputs[role], eval_inputs["key"]) for name, art in run.manifest["models"][role]["artifacts"].items()]
        try:
            run.benchmark_all(jobs)
        finally:  # what the devices that worked measured is reported even when another failed
            run.close_devices()
            run.keep_benchmarks(earlier)
            run.search_outcome()
            run.save_manifest()
            write_report(rundir.root, [(rundir.root.resolve().name, run.manifest)])
        return run.manifest


def _earlier_benchmarks(path: Path) -> list[dict[str, Any]]:
    """Results that `edgepipe bench` added to a previous manifest of this run dir."""
    try:
        return list(json.loads(path.read_text()).get("benchmarks", []))
    except (OSError, ValueError, AttributeError):
        return []


def bench_run(out: Path, overrides: dict[str, Any], progress: Progress = Silent()) -> dict[str, Any]:
    """`edgepipe bench RUN_DIR`: benchmark a finished run's artifacts again (other devices, threads, runs).

    The run's own config is the base; `overrides` (bench.* keys) change how it is measured.
    Artifacts are hash-checked first: a file changed since the run is refused, not measured.
    """
    manifest_path = Path(out) / MANIFEST
    if not manifest_path.is_file():
        raise RunDirError(f"{out} has no {MANIFEST}; run compress-and-export --out {out} first")
    try:
        manifest = json.loads(manifest_path.read_text())
        base = flatten_tree(manifest["config"])
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
        raise RunDirError(f"{manifest_path} is corrupt; rerun compress-and-export --out {out} to rebuild it") from None
    if "bench.fleet" in overrides and "bench.devices" not in overrides:
        base.pop("bench.devices", None)  # `--fleet` alone: the fleet's devices, not the run's
    cfg = build_config(base, overrides, source="bench")
    with RunDir(out) as rundir:
        run = Run(cfg, rundir, Path(), progress)
        run.manifest = manifest
        manifest.setdefault("benchmarks", [])
        jobs = []
        for role, m in manifest["models"].items():
            ev = m.get("eval_inputs")
            if ev is None:
                raise RunDirError(f"{out} was made by an older edgepipe (no eval_inputs for {role}); rerun compress-and-export")
            for name, art in m.get("artifacts", {}).items():
                if cfg.bench.artifacts is not None and name not in cfg.bench.artifacts:
                    continue
                path = rundir.path(art["path"])
                if not path.is_file() or sha256_file(path) != art["sha256"]:
                    raise ModelError(f"{path} is missing or changed since the run (sha256 mismatch); rerun compress-and-export --out {out}")
                jobs.append((role, name, art, rundir.path(ev["path"]), ev["key"]))
        try:
            run.benchmark_all(jobs)
        finally:  # what the devices that worked measured is reported even when another failed
            run.close_devices()
            run.save_manifest()
            write_report(rundir.root, [(rundir.root.resolve().name, manifest)])
        return manifest


def prune_stage(student, soft_targets, cfg: RunConfig, dataset: Dataset, train: TokenizedSplit, tokenizer, source: Path, out_dir: Path, progress: Progress,
                scores=None, writer: bool = True):  # fmt: skip
    """Structured pruning, vocabulary pruning, recovery; saves the pruned model and its tokenizer (`writer`: this rank writes)."""
    import tempfile

    from edgepipe.pipeline import prune as P

    pruned, report = P.prune(student, soft_targets, cfg, train, progress, scores)
    new_tokenizer = tokenizer
    if cfg.prune.vocab:
        vocab_dir = out_dir if writer else Path(tempfile.mkdtemp(prefix="edgepipe-vocab-"))  # other ranks need the tokenizer, not the files
        keep, vocab, new_tokenizer = P.corpus_vocabulary(tokenizer, dataset.texts["train"], source, vocab_dir)
        P.prune_vocab(pruned, keep)
        test_ids = tokenizer(dataset.texts["test"], add_special_tokens=False)["input_ids"]
        kept = set(keep)
        n_tok = sum(map(len, test_ids))
        report["vocab"] = {
            "original": len(vocab),
            "kept": len(keep),
            "test_tokens_outside_kept": round(sum(t not in kept for ids in test_ids for t in ids) / max(1, n_tok), 5),
        }
    p_splits = dataset.tokenize(new_tokenizer, cfg.data.max_length)
    before = {f"{s}_accuracy": accuracy(predict(pruned, p_splits[s]), p_splits[s].labels) for s in ("val", "test")}
    report["accuracy_before_recovery"] = before["test_accuracy"]
    report["val_accuracy_before_recovery"] = before["val_accuracy"]
    report["recovery"] = P.recover(pruned, soft_targets, cfg, p_splits["train"], progress)
    if not writer:
        return report, []
    files = save_classifier(pruned, out_dir, tokenizer_dir=None if cfg.prune.vocab else source)
    files += [out_dir / n for n in ("vocab.txt", "tokenizer.json", "tokenizer_config.json") if cfg.prune.vocab]
    return report, files


def _yaml(tree: dict[str, Any]) -> bytes:
    import yaml

    return yaml.safe_dump(tree, sort_keys=False).encode()
