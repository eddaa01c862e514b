"""One validated config for the whole pipeline.

Defaults live here and only here. A YAML file, the `--smoke` preset and CLI flags
are all dotted-key overrides of the same tree (`distill.temperature: 4` in YAML is
`--set distill.temperature=4` on the command line), validated once at the edge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepipe.device_spec import parse_device
from edgepipe.errors import ConfigError
from edgepipe.measurement import EnergySettings, Measurement, ThermalSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    path: Path | None = Field(
        None, description="CSV/TSV or JSONL with text/label columns; None = built-in Rotten Tomatoes"
    )
    text_column: str = Field("text", description="the text; for pairs the first text (text_a when there is no `text`)")
    text_b_column: str = Field("text_b", description="the second text of a pair (task pair_classification)")
    label_column: str = Field("label", description="the label; multi-label data: `labels` when there is no `label`")
    label_separator: str = Field("|", min_length=1, description="between the labels of one multi-label cell")
    split_column: str | None = Field(
        None, description="column with train/val/test per row; None = seeded split, stratified by label"
    )
    val_size: float = Field(1000, gt=0, description="examples (>=1) or fraction (<1) held out for validation")
    test_size: float = Field(2000, gt=0, description="examples (>=1) or fraction (<1) held out for test")
    max_length: int = Field(64, ge=8, le=512, description="wordpiece tokens per example, [CLS]/[SEP] included")
    train_limit: int | None = Field(None, gt=0, description="use only this many training examples (smoke runs)")
    split_seed: int = Field(0, description="seed of the train/val/test split, kept apart from the training seed")
    unlabeled: Path | None = Field(
        None, description="texts without labels (CSV/JSONL with the text column, or .txt one per line) for distillation"
    )
    delimiter: str | None = Field(
        None, description="CSV field separator, one character (',', ';', '|', tab as \\t); None = guessed (.tsv: tab)"
    )
    fold_label_case: bool = Field(False, description="lowercase labels ('Pos' and 'pos' become one class)")

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, v: str | None) -> str | None:
        """`\\t` and `tab` are accepted for a tab: a literal tab is hard to type in a shell or YAML."""
        if v is None:
            return None
        v = {"\\t": "\t", "tab": "\t"}.get(v, v)
        if len(v) != 1 or v in '"\r\n':
            raise ValueError(
                "must be one character other than a quote or newline, e.g. ';' or \\t for a tab "
                "(on the command line quote a pipe: --set \"data.delimiter='|'\")"
            )
        return v


class _Schedule(_Section):
    """How long a training stage runs (edgepipe.model.train.TrainSettings): planned in optimizer steps,
    validated periodically, the best checkpoint kept."""

    epochs: float = Field(1.0, gt=0, description="passes over the training set planned (raised to min_steps)")
    min_steps: int = Field(
        300,
        ge=0,
        description="train at least this many optimizer steps (500 examples: ~10 epochs); no early stop before",
    )
    max_steps: int | None = Field(None, gt=0, description="never more optimizer steps than this (wins over min_steps)")
    evaluations: int = Field(
        6, ge=0, description="validation checks over the planned steps; the best checkpoint is kept (0 = none)"
    )
    patience: int | None = Field(
        3, ge=1, description="stop after this many checks without a better validation metric; None = never"
    )
    validation_examples: int = Field(500, gt=0, description="validation examples each check scores")
    group_by_length: bool = Field(
        False,
        description="batches of texts of similar length (shuffled groups of 50 batches sorted by length): less "
        "padding per step. Off: on the built-in task the distilled student lost 1.9 points (80.9 vs 82.8 %)",
    )


class TeacherConfig(_Schedule):
    path: Path | None = Field(None, description="local Hugging Face model dir; None = built-in all-MiniLM-L6-v2")
    finetune: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: fine-tune unless the dir already has a classification head matching the labels"
    )
    lr: float | None = Field(None, gt=0, description="None = by data size (DATA_SIZE_DEFAULTS)")
    batch_size: int | None = Field(None, gt=0, description="None = by data size (DATA_SIZE_DEFAULTS)")
    freeze_word_embeddings: bool | None = Field(None, description="None = by data size (DATA_SIZE_DEFAULTS)")
    group_by_length: bool | None = Field(
        None,
        description="batches of texts of similar length: less padding per step. None = by data size "
        "(DATA_SIZE_DEFAULTS): on from SMALL_DATA examples, where the built-in teacher kept its accuracy "
        "(82.3 vs 82.4 %) in 96 s instead of 277 s; off below, where a 400-text teacher trained on "
        "length-sorted batches fell to 54 % (the majority baseline is 50 %)",
    )
    require_beat_baseline: bool = Field(
        True,
        description="stop before distilling when the teacher is not clearly better than the majority-class baseline",
    )
    baseline_margin: float = Field(
        0.02, ge=0, lt=1, description="the teacher must beat the baseline by this much (a fraction) on test"
    )
    baseline_p_value: float = Field(
        0.01, gt=0, lt=1, description="... and significantly: one-sided binomial test on the test split"
    )


class StudentConfig(_Section):
    layers: list[int] = Field([0, 2, 4], min_length=1, description="teacher layers copied into the student")
    hidden_size: int | None = Field(None, gt=0, description="None = teacher width; smaller = narrower student")
    num_heads: int | None = Field(None, gt=0)
    intermediate_size: int | None = Field(None, gt=0)
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="hidden and attention dropout; None = the teacher's (0 makes N-process training match 1-process)",
    )


class DistillConfig(_Schedule):
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the soft-target KL term; 1-alpha weighs CE")
    hidden_weight: float = Field(0.0, ge=0, description="weight of hidden-state MSE (0 = off)")
    lr: float = Field(1e-4, gt=0)
    batch_size: int | None = Field(None, gt=0, description="None = by data size (DATA_SIZE_DEFAULTS)")
    augment: int | None = Field(
        None,
        ge=0,
        description="augmented copies of each training text (word dropout/replacement) scored by the teacher; None = by data size",
    )
    transfer_max_examples: int = Field(
        20000, ge=0, description="bound on the texts added to the labelled ones (augmented + data.unlabeled)"
    )


class PruneConfig(_Section):
    enabled: bool = True
    heads: float = Field(0.5, ge=0, lt=1, description="fraction of attention heads removed (by importance)")
    ffn: float = Field(0.6, ge=0, lt=1, description="fraction of FFN intermediate neurons removed")
    layers: int = Field(0, ge=0, description="whole layers removed (least important first)")
    hidden: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="fraction of the hidden width (the residual stream, embedding tables included) removed, "
        "by importance, in whole head widths; None = a third where the architecture and the task's head "
        "allow it, with recovery_epochs 2 (pipeline.prune.width_defaults), else 0",
    )
    target_params: int | None = Field(
        None,
        gt=0,
        description="non-embedding parameters to keep; sets one ratio for heads and FFN (overrides heads/ffn)",
    )
    importance: Literal["taylor", "magnitude"] = Field("taylor", description="taylor: |dL/dmask| over training batches")
    importance_batches: int = Field(200, gt=0)
    vocab: bool = Field(True, description="keep only tokens of the training corpus (+ specials and characters)")
    recovery_epochs: float = Field(1.0, ge=0, description="distillation from the teacher after pruning")
    recovery_min_steps: int = Field(
        300, ge=0, description="at least this many recovery steps (validation as distill.*)"
    )
    recovery_max_steps: int | None = Field(None, gt=0)
    recovery_lr: float = Field(1e-4, gt=0)


class QuantizeConfig(_Section):
    enabled: bool = True
    targets: list[Literal["pruned", "student"]] = Field(
        ["pruned"],
        description="models to quantize; the unpruned student's int8 is a comparison, not a deliverable "
        "(its budget loop took 312 s of a 1,170 s default run): add student to measure it",
    )
    calibration_examples: int = Field(256, gt=0, description="real training examples fed through the model")
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="uint8 activations ran 2x faster on x86")
    per_channel: bool = True
    op_types: list[str] | None = Field(
        None,
        min_length=1,
        description="ops to quantize; [all] = every op ORT can (fastest on x86); None = the task's "
        "(all for classification and tagging, [MatMul, Gemm] for embeddings)",
    )
    format: Literal["qdq", "qoperator"] = "qdq"
    embedding: Literal["int4", "int8", "fp32"] = Field(
        "int4",
        description="word/position tables: 4-bit blocks of 32 (falls back to int8 rows if it misses the budget), "
        "int8 rows, or fp32; gathered, then scaled (ONNX and TFLite)",
    )
    max_accuracy_drop: float = Field(0.5, ge=0, description="validation accuracy points int8 may lose vs fp32")
    min_agreement: float = Field(
        0.97, ge=0, le=1, description="int8 vs fp32 argmax agreement on validation (a lower-noise check than accuracy)"
    )
    max_excluded_groups: int = Field(8, ge=0, description="node groups the budget loop may keep in fp32")
    fuse_attention: bool = Field(
        True,
        description="fuse attention into ONNX Runtime's MultiHeadAttention before int8 (checked against the "
        "unfused graph; unfused if it does not match): int8 p50 0.62x -> 0.52x of fp32 on the default model",
    )

    @model_validator(mode="after")
    def _entropy_needs_matmul_only(self) -> QuantizeConfig:
        if self.method == "entropy" and self.op_types == ["all"]:
            raise ValueError(
                'entropy calibration fails on all ops ("Too many bins": attention-mask values); use op_types [MatMul, Gemm]'
            )
        return self

    def within_budget(self, drop_points: float, agreement: float) -> bool:
        """The int8 budget, in one place. A drop is the difference of two rates: 1 text of 200 is
        0.50000000000004 points in floating point, so it is compared with a 1e-9 tolerance."""
        return drop_points <= self.max_accuracy_drop + 1e-9 and agreement >= self.min_agreement - 1e-12


class ExportConfig(_Section):
    seq_len: int = Field(
        64,
        ge=1,
        description="deployment sequence length: TFLite input shapes, int8 calibration, MACs, bundles, latency runs",
    )
    opset: int = Field(18, ge=17, le=21)
    parity_atol: float = Field(1e-4, gt=0, description="max abs logit diff allowed between an fp32 export and PyTorch")
    tflite: bool = Field(True, description="also write TFLite fp32 + int8 (needs litert-torch)")
    tflite_targets: list[Literal["pruned", "student", "teacher"]] = Field(
        ["pruned"], description="models converted to TFLite"
    )
    tflite_metadata: bool = Field(
        True, description="embed Task Library (BertNLClassifier) metadata in the bundled TFLite model"
    )
    # TFLite shapes are static: a 27-token text padded to 64 pays for 64 (1.0 ms against 0.35 ms at 32 and
    # 0.14 ms at 16 on the default model, measured). Shorter signatures in the same file share its weights
    # (+~0.1 MB each); the default signature stays [1, seq_len], which the Task Library and MediaPipe run.
    tflite_buckets: list[int] | None = Field(
        None,
        description="extra TFLite signatures seq_N taking [1, N] (N < seq_len), which an app picks by the text's "
        "token count; None = 16, 32, ... below seq_len; [] = none",
    )

    @model_validator(mode="after")
    def _buckets_below_seq_len(self) -> ExportConfig:
        bad = [n for n in self.tflite_buckets or () if not 1 <= n < self.seq_len]
        if bad:
            raise ValueError(
                f"export.tflite_buckets {bad} must lie between 1 and export.seq_len - 1 ({self.seq_len - 1}): "
                "the default signature already takes seq_len"
            )
        return self

    def bucket_lengths(self) -> list[int]:
        """The extra TFLite signature lengths, shortest first."""
        if self.tflite_buckets is not None:
            return sorted(set(self.tflite_buckets))
        return [n for n in (16, 32, 64, 128, 256) if n < self.seq_len]

    # off by default: lowering fp32 + int8 + 8da4w and checking them cost 147 s of the default run (measured;
    # issue 20 allows 60 s by default); --smoke turns it on, so CI covers it
    executorch: bool = Field(False, description="also write ExecuTorch .pte programs (XNNPACK; needs executorch)")
    executorch_targets: list[Literal["pruned", "student", "teacher"]] = Field(
        ["pruned"], description="models lowered to ExecuTorch"
    )
    executorch_variants: list[Literal["fp32", "int8", "8da4w"]] = Field(
        ["fp32", "int8", "8da4w"],
        min_length=1,
        description="fp32 (always written: the others' reference); int8: static PT2E; 8da4w: int4 weights, int8 dynamic activations",
    )


class SshConfig(_Section):
    """How `arm:USER@HOST` devices are reached. Keys and agents only: no password is ever stored."""

    identity_file: Path | None = Field(None, description="private key; None = ssh-agent and ~/.ssh/id_*")
    known_hosts: Path | None = Field(None, description="host keys to trust; None = ~/.ssh/known_hosts")
    insecure_skip_host_key_check: bool = Field(
        False, description="accept any host key (man-in-the-middle risk; labs only)"
    )
    python: str = Field(
        "python3", min_length=1, description="python on the board (needs numpy + onnxruntime / ai-edge-litert)"
    )
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(1800.0, gt=0, description="one runner invocation on the board")


class AndroidConfig(_Section):
    """How `android[:SERIAL]` devices are reached: through the adb server."""

    adb_host: str = Field("127.0.0.1", description="adb server host")
    adb_port: int = Field(5037, ge=1, le=65535, description="adb server port")
    remote_dir: str = Field("/data/local/tmp/edgepipe", min_length=1, description="device folder for per-run work dirs")
    python: str | None = Field(
        "python3", description="python on the device (Termux, rooted boards); None = never use python"
    )
    benchmark_model: Path | None = Field(
        None,
        description="local LiteRT benchmark_model binary (android_aarch64) pushed for .tflite when the device has no python",
    )
    command_timeout_s: float = Field(1800.0, gt=0)


class FleetDevice(_Section):
    """One device of a fleet file, with its own connection settings and free-form tags (soc, board, abi...)."""

    device: str = Field(..., description="x86, arm:USER@HOST[:PORT], android[:SERIAL]")
    tags: dict[str, str] = Field({}, description="recorded with every result of this device")
    ssh: SshConfig | None = Field(None, description="replaces bench.ssh for this device")
    android: AndroidConfig | None = Field(None, description="replaces bench.android for this device")

    @field_validator("device")
    @classmethod
    def _known(cls, v: str) -> str:
        return parse_device(v).text


def _device_text(text: str) -> str:
    """Normalised when valid; a bad one stays as written for the `devices` validator to name."""
    try:
        return parse_device(text).text
    except ValueError:
        return text


class BenchConfig(_Section):
    devices: list[str] = Field(
        ["x86"], min_length=1, description="x86, arm:USER@HOST[:PORT], android[:SERIAL]; a fleet adds its own"
    )
    artifacts: list[str] | None = Field(
        None, description="artifact names to benchmark (e.g. [onnx_int8, tflite_int8]); None = all"
    )
    models: list[str] | None = Field(None, description="models to benchmark (teacher, student, pruned); None = all")
    threads: int = Field(1, ge=1, description="intra-op threads of the runtime under test")
    batch: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(100, ge=1)
    max_eval: int | None = Field(
        None, gt=0, description="evaluate accuracy on the first N test examples only (slow devices)"
    )
    pin_cores: str | None = Field(
        None, pattern=r"^[0-9]+([,-][0-9]+)*$", description="taskset core list for the runner, e.g. '0' or '4-7'"
    )
    accuracy: bool = Field(True, description="also measure accuracy on the eval inputs (false: latency only)")
    thermal: ThermalSettings = ThermalSettings()
    energy: EnergySettings = EnergySettings()
    ssh: SshConfig = SshConfig()
    android: AndroidConfig = AndroidConfig()
    fleet: list[FleetDevice] = Field(
        [], description="devices with their own connection settings and tags (--fleet FILE.yaml)"
    )
    parallel_devices: bool = Field(True, description="benchmark the devices concurrently, one worker per device")
    device_lock_timeout_s: float = Field(
        3600, ge=0, description="how long to wait for a device another edgepipe run is using"
    )
    lock_dir: Path | None = Field(None, description="where device locks live; None = the edgepipe cache dir's locks/")

    @model_validator(mode="before")
    @classmethod
    def _fleet_devices(cls, data: Any) -> Any:
        """A fleet's devices are benchmarked too; with a fleet and no explicit `devices`, only the fleet's."""
        if isinstance(data, dict) and data.get("fleet"):
            fleet = [e.get("device") if isinstance(e, dict) else getattr(e, "device", None) for e in data["fleet"]]
            data = dict(
                data,
                devices=list(
                    dict.fromkeys([*data.get("devices", []), *(_device_text(d) for d in fleet if isinstance(d, str))])
                ),
            )
        return data

    @property
    def side_by_side(self) -> bool:
        """Devices benchmarked by concurrent workers (see Run.benchmark_all)."""
        return self.parallel_devices and len(self.devices) > 1

    def measurement(self, seq_len: int) -> Measurement:
        """How one artifact is measured (stage keys hash this, not how devices are reached)."""
        return Measurement(seq_len=seq_len, **self.model_dump(include=set(Measurement.model_fields) - {"seq_len"}))

    def connection(self, text: str) -> tuple[SshConfig, AndroidConfig]:
        """How `text` is reached: a fleet entry's own ssh/android settings, else these."""
        entry = next((e for e in self.fleet if e.device == text), None)
        return (entry and entry.ssh) or self.ssh, (entry and entry.android) or self.android

    def tags(self, text: str) -> dict[str, str]:
        return next((dict(e.tags) for e in self.fleet if e.device == text), {})

    @field_validator("devices")
    @classmethod
    def _known_devices(cls, v: list[str]) -> list[str]:
        specs = [parse_device(d) for d in v]
        texts = [s.text for s in specs]
        if len(set(texts)) != len(texts):
            raise ValueError(f"device listed twice in {v}")
        return texts


SEARCH_FORMATS = ("onnx_int8", "tflite_int8", "executorch_int8", "onnx_fp32", "tflite_fp32", "executorch_fp32")


class SearchConfig(_Section):
    """Budget-driven compression: any budget set turns the search on (see edgepipe.pipeline.search).

    The space is the pruning of the distilled student: whole layers removed, head and FFN
    ratios, vocabulary pruning, and the artifact format. Latency comes from the device.
    """

    max_latency_ms: float | None = Field(
        None, gt=0, description="p50 latency budget on search.device (bench threads/batch/seq)"
    )
    max_size_mb: float | None = Field(None, gt=0, description="artifact size budget in MB (1e6 bytes)")
    max_memory_mb: float | None = Field(
        None, gt=0, description="peak RSS budget on search.device, MB: the runner process's VmHWM, interpreter included"
    )
    min_accuracy: float | None = Field(
        None, ge=0, le=1, description="validation accuracy floor, a fraction (0.8 = 80%)"
    )
    device: str | None = Field(None, description="device the budget is for; None = the first of bench.devices")
    formats: list[Literal[SEARCH_FORMATS]] = Field(
        ["onnx_int8", "tflite_int8"], min_length=1, description="artifact formats the plan may ship as"
    )  # type: ignore[valid-type]
    layers_removed: list[int] = Field(
        [0, 1], min_length=1, description="whole student layers removed (least important first)"
    )
    heads: list[float] = Field([0.0, 0.25, 0.5, 0.75], min_length=1, description="head-pruning ratios tried")
    ffn: list[float] = Field([0.0, 0.3, 0.6, 0.8, 0.9], min_length=1, description="FFN-pruning ratios tried")
    vocab: list[bool] = Field([True], min_length=1, description="vocabulary pruning on/off tried")
    latency_points: int = Field(16, ge=8, description="untrained random shapes measured on the device per format")
    holdout: float = Field(0.25, ge=0, lt=1, description="fraction of those points kept out of the fit to check it")
    candidates: int = Field(
        6, ge=1, description="plans trained briefly for an accuracy estimate (the search's main cost)"
    )
    estimate_steps: int = Field(100, ge=1, description="distillation steps of each accuracy estimate")
    time_budget_s: float = Field(
        3600, gt=0, description="wall time of the search; it stops measuring and training new plans after it"
    )

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.max_latency_ms, self.max_size_mb, self.max_memory_mb, self.min_accuracy)
        )

    @field_validator("heads", "ffn")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0 <= r < 1 for r in v):
            raise ValueError(f"ratios must be in [0, 1): {v}")
        return sorted(set(v))

    @field_validator("layers_removed")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if any(n < 0 for n in v):
            raise ValueError(f"layer counts must be >= 0: {v}")
        return sorted(set(v))

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return None if v is None else parse_device(v).text


class RunConfig(_Section):
    task: str = Field(
        "auto",
        description="sequence_classification, pair_classification, ...; auto = the teacher's head's, "
        "else the data's columns (text_a+text_b: pairs), else sequence_classification",
    )
    seed: int = 0
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="torch threads for training (recorded)"
    )
    data: DataConfig = DataConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    distill: DistillConfig = DistillConfig()
    prune: PruneConfig = PruneConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    export: ExportConfig = ExportConfig()
    bench: BenchConfig = BenchConfig()
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _fits(self) -> RunConfig:
        if self.prune.enabled and self.prune.layers >= len(self.student.layers):
            raise ValueError(
                f"prune.layers={self.prune.layers} would remove all {len(self.student.layers)} student layers; keep at least one"
            )
        if self.export.seq_len > self.data.max_length:
            raise ValueError(f"export.seq_len ({self.export.seq_len}) exceeds data.max_length ({self.data.max_length})")
        if self.search.active:
            self._search_fits()
        return self

    def _search_fits(self) -> None:
        s = self.search
        if not self.prune.enabled:
            raise ValueError("a budget (search.*) needs prune.enabled: the search picks the pruning plan")
        if all(n >= len(self.student.layers) for n in s.layers_removed):
            raise ValueError(
                f"search.layers_removed {s.layers_removed} would remove all {len(self.student.layers)} student layers; include 0"
            )
        tflite = self.export.tflite and "pruned" in self.export.tflite_targets
        pte = self.export.executorch and "pruned" in self.export.executorch_targets
        makes = {
            "onnx_fp32": True,
            "onnx_int8": self.quantize.enabled and "pruned" in self.quantize.targets,
            "tflite_fp32": tflite,
            "tflite_int8": tflite,
            "executorch_fp32": pte,
            "executorch_int8": pte and self.quantize.enabled and "int8" in self.export.executorch_variants,
        }
        missing = [f for f in s.formats if not makes[f]]
        if missing:
            raise ValueError(
                f"search.formats {missing} are not produced for the pruned model; enable them "
                "(quantize, export.tflite, export.executorch) or drop them"
            )
        if s.device is not None and s.device not in self.bench.devices:
            raise ValueError(f"search.device {s.device} is not in bench.devices {self.bench.devices}; add it there too")

    @property
    def search_device(self) -> str:
        return self.search.device or self.bench.devices[0]

    def measurement(self) -> Measurement:
        return self.bench.measurement(self.export.seq_len)


def default_cache_dir() -> Path:
    """Teachers fine-tuned once for every run dir, and the device locks: `$EDGEPIPE_CACHE` or ~/.cache/edgepipe."""
    return Path(os.environ.get("EDGEPIPE_CACHE") or Path.home() / ".cache" / "edgepipe")


# Settings left unset (None) are chosen by the size of the labelled training split, here and only
# here; a value the user sets always wins. Measured on the built-in task (README "Training on your
# own data"): at 9,752 examples these are the settings tuned before; at 500 examples frozen word
# embeddings and batch 32 left the teacher near the majority baseline.
SMALL_DATA = 5000  # training examples
DATA_SIZE_DEFAULTS: dict[str, tuple[Any, Any]] = {  # key: (value below SMALL_DATA, value at or above)
    "teacher.freeze_word_embeddings": (False, True),
    "teacher.batch_size": (16, 32),
    "teacher.lr": (1e-4, 1e-4),
    "teacher.group_by_length": (False, True),
    "distill.batch_size": (16, 32),
    "distill.augment": (8, 0),
}


def for_data_size(cfg: RunConfig, n_train: int) -> tuple[RunConfig, dict[str, Any]]:
    """`cfg` with its unset data-size settings filled for `n_train` examples, and what was filled."""
    flat = flatten_tree(config_to_dict(cfg))
    small = n_train < SMALL_DATA
    chosen = {k: v[0] if small else v[1] for k, v in DATA_SIZE_DEFAULTS.items() if flat.get(k) is None}
    return (build_config(flat, chosen) if chosen else cfg), chosen


def explicit_keys(section: BaseModel, prefix: str = "") -> set[str]:
    """The dotted keys a config was given (defaults left out), from pydantic's `model_fields_set`.
    Valid on a config as `build_config` made it from its layers; one rebuilt from a full dump
    (`for_data_size`) has every key set."""
    keys: set[str] = set()
    for name in section.model_fields_set:
        value = getattr(section, name)
        if isinstance(value, _Section):
            keys |= explicit_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def for_task(cfg: RunConfig, defaults: dict[str, Any], explicit: set[str]) -> tuple[RunConfig, dict[str, Any]]:
    """`cfg` with the task's defaults (Task.config_defaults) for the keys nobody set, and what changed."""
    flat = flatten_tree(config_to_dict(cfg))
    chosen = {k: v for k, v in defaults.items() if k not in explicit and flat.get(k) != v}
    return (build_config(flat, chosen) if chosen else cfg), chosen


SMOKE: dict[str, Any] = {
    "export.executorch": True,
    "data.train_limit": 960,
    "data.val_size": 200,
    "data.test_size": 400,
    "teacher.max_steps": 30,
    "teacher.lr": 3e-4,
    "teacher.validation_examples": 100,
    "teacher.batch_size": 32,  # CI speed over small-data quality: the settings smoke runs always had
    "teacher.freeze_word_embeddings": True,
    "student.layers": [0],
    "distill.max_steps": 30,
    "distill.lr": 3e-4,
    "distill.validation_examples": 100,
    "distill.batch_size": 32,
    "distill.augment": 1,
    "prune.importance_batches": 10,
    "prune.recovery_max_steps": 30,
    "prune.recovery_lr": 3e-4,
    "quantize.calibration_examples": 64,
    "quantize.targets": ["pruned", "student"],  # CI covers the opt-in comparison (seconds at this size)
    "bench.warmup": 2,
    "bench.runs": 20,
}


# Keys that moved, old spelling -> new; the old one keeps working with a one-line note (see `migrate`).
MOVED = {"bench.seq_len": "export.seq_len"}


def migrate(flat: dict[str, Any], notes: list[str] | None = None) -> dict[str, Any]:
    """Old key spellings mapped to where they live now; `notes` collects one line per key moved."""
    out = dict(flat)
    for old, new in MOVED.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
            if notes is not None:
                notes.append(
                    f"{old} is now {new} (the sequence length the artifacts are built for); the old key still works"
                )
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """`key.path=value`, the value read as YAML (numbers, lists, booleans); never evaluated as code."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set distill.temperature=4")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Sections nest (bench.ssh.python); no config value is itself a mapping, so every dict is a section."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(flatten_tree(v, key + "."))
        else:
            flat[key] = v
    return flat


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key {key!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return tree


def load_fleet(path: Path) -> list[dict[str, Any]]:
    """A fleet file: a YAML list of devices (or `devices:` holding one), each a device string or a mapping."""
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"fleet file {path} does not exist; pass an existing YAML file to --fleet") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"fleet file {path} cannot be read as YAML ({type(e).__name__}); fix it") from None
    if isinstance(tree, dict) and "devices" in tree:
        tree = tree["devices"]
    if not isinstance(tree, list) or not tree:
        raise ConfigError(f"fleet file {path} must be a non-empty list of devices (- device: arm:pi@board ...)")
    return [{"device": e} if isinstance(e, str) else e for e in tree]


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({e}); check its permissions and encoding") from None
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}; fix the syntax") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (data:, teacher:, ...)")
    return flatten_tree(tree)


def build_config(*layers: dict[str, Any], source: str = "config", notes: list[str] | None = None) -> RunConfig:
    """Merge dotted-key override layers (later wins) onto the defaults and validate."""
    flat: dict[str, Any] = {}
    for layer in layers:
        flat.update(migrate(layer, notes))
    try:
        return RunConfig.model_validate(_nest(flat))
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown key {loc!r}; see `compress-and-export --help` for the keys") from None
        got = err.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict) else ""
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{loc}: " if loc else ""
        raise ConfigError(
            f"{source}: {where}{msg}{shown}; fix it in the file or with --set {loc or 'KEY'}=VALUE"
        ) from None


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
