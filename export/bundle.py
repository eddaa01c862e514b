"""App bundles: one folder per target with everything an app needs to run the task on text.
Reads `export.seq_len` and `export.tflite_metadata`.

    bundles/<target>/  model file, tokenizer files, labels.txt, model_card.json, README.md, app_check.py

`model_card.json` is read from the model file itself (input names, dtypes and shapes
as the runtime reports them), not assumed; its tokenizer section comes from the
architecture, its task section from the task; `app_check.py` proves the folder is enough.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from edgepipe.arch.base import Architecture
from edgepipe.devices.standalone import app_check
from edgepipe.export.tflite import default_signature_only
from edgepipe.export.tflite_metadata import write_metadata
from edgepipe.manifest import Artifact
from edgepipe.model.load import Tokenizer
from edgepipe.rundir import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic
from edgepipe.runtimes.executorch import ExecuTorchModel
from edgepipe.runtimes.litert import LiteRTModel
from edgepipe.stages import Result, Stages
from edgepipe.tasks.base import Task

APP_CHECK = Path(app_check.__file__)
# bundle -> the shipped model's artifact it packs
TARGETS = {"tflite": "tflite_int8", "ort": "ort", "executorch": "executorch_int8"}

SNIPPETS = {
    "litert": """\
## Load it

{metadata}The raw signature: {count} int32 tensors `[1, {seq}]` ({roles}; pad
with the pad id) in, float32 {out} `[1, {n}]` out; {tokenize}

With the Interpreter API:

Kotlin (Android, `com.google.ai.edge.litert:litert`):
```kotlin
val interpreter = Interpreter(loadModelFile(context, "{file}"), Interpreter.Options().setNumThreads(2))
val inputs = arrayOf({kotlin_arrays})            // IntArray(1 x {seq}) each, from {token_file}
val {out} = Array(1) {{ FloatArray({n}) }}
interpreter.runForMultipleInputsOutputs(inputs, mapOf(0 to {out}))
{kotlin_answer}
```

Swift (iOS, `TensorFlowLiteSwift`):
```swift
let interpreter = try Interpreter(modelPath: Bundle.main.path(forResource: "{stem}", ofType: "tflite")!)
try interpreter.allocateTensors()
for (i, tensor) in [{kotlin_arrays}].enumerated() {{   // [Int32] of length {seq}
    try interpreter.copy(Data(bytes: tensor, count: tensor.count * 4), toInputAt: i)
}}
try interpreter.invoke()
let {out} = try interpreter.output(at: 0).data.withUnsafeBytes {{ Array($0.bindMemory(to: Float32.self)) }}
```
{buckets}""",
    "onnxruntime": """\
## Load it

ORT format for ONNX Runtime Mobile (`{file}`; a reduced build takes
`{config}`). Inputs {onnx_names}: int64
`[1, sequence]` (up to {seq}); output `{out}` float32 `[1, {n}]`. {tokenize_cap}

Kotlin (Android, `com.microsoft.onnxruntime:onnxruntime-android`):
```kotlin
val env = OrtEnvironment.getEnvironment()
val session = env.createSession(readAsset("{file}"), OrtSession.SessionOptions())
val shape = longArrayOf(1, ids.size.toLong())
val feeds = mapOf(
    "input_ids" to OnnxTensor.createTensor(env, LongBuffer.wrap(ids), shape),
    "attention_mask" to OnnxTensor.createTensor(env, LongBuffer.wrap(mask), shape){kotlin_segments})
val {out} = (session.run(feeds)[0].value as Array<FloatArray>)[0]
```

Swift (iOS, `onnxruntime-objc`):
```swift
let env = try ORTEnv(loggingLevel: .warning)
let session = try ORTSession(env: env, modelPath: Bundle.main.path(forResource: "{stem}", ofType: "ort")!, sessionOptions: nil)
let shape: [NSNumber] = [1, NSNumber(value: ids.count)]
let feeds = try [{swift_feeds}].mapValues {{
    try ORTValue(tensorData: NSMutableData(data: Data(bytes: $0, count: $0.count * 8)), elementType: .int64, shape: shape) }}
let {out} = try session.run(withInputs: feeds, outputNames: ["{out}"], runOptions: nil)["{out}"]!
```
""",
    "executorch": """\
## Load it

ExecuTorch program (`{file}`, lowered to the XNNPACK backend: link ExecuTorch's XNNPACK backend and
its quantized kernels). Inputs {onnx_names}: int64 `[batch, sequence]` (batch up to {max_batch},
sequence 2 to {seq}: send each text at its own length, no padding needed); output `{out}` float32
`[batch, {n}]`. {tokenize_cap}

Kotlin (Android, `org.pytorch:executorch-android`):
```kotlin
val module = Module.load(File(context.filesDir, "{file}").absolutePath)
val shape = longArrayOf(1, ids.size.toLong())
val outputs = module.forward(
    EValue.from(Tensor.fromBlob(ids, shape)),                   // LongArray from {token_file}
    EValue.from(Tensor.fromBlob(mask, shape)){kotlin_segments_et})
val {out} = outputs[0].toTensor().dataAsFloatArray
{kotlin_answer}
```

Swift (iOS, Swift package `executorch`, products `executorch`, `backend_xnnpack`, `kernels_quantized`):
```swift
import ExecuTorch
let module = Module(filePath: Bundle.main.path(forResource: "{stem}", ofType: "pte")!)
let shape = [1, ids.count]
let outputs = try module.forward([{swift_tensors}])
let {out}: [Float] = outputs[0].tensor()!.scalars()
```
""",
}


def describe_io(
    model_file: Path, input_names: tuple[str, ...], output_names: tuple[str, ...]
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(runtime, inputs, outputs) as the runtime itself reports them; `role` is what each tensor means."""
    if model_file.suffix == ".tflite":
        it = LiteRTModel(model_file).interpreter
        ins = sorted(
            it.get_input_details(), key=lambda d: d["name"]
        )  # litert-torch names them args_0, args_1, ... in order

        def tensor(d, role):
            scale, zero_point = d.get("quantization", (0.0, 0))
            quant = {"quantization": {"scale": float(scale), "zero_point": int(zero_point)}} if scale else {}
            return {
                "tensor": d["name"],
                "role": role,
                "dtype": d["dtype"].__name__,
                "shape": d["shape"].tolist(),
            } | quant

        outs = it.get_output_details()
        return (
            "litert",
            [tensor(d, r) for d, r in zip(ins, input_names)],
            [tensor(d, r) for d, r in zip(outs, output_names)],
        )
    if model_file.suffix == ".pte":
        m = ExecuTorchModel(model_file)
        meta = m.program.metadata("forward")
        shape = [f"batch<={m.max_batch}", f"sequence<={m.max_seq}"]
        out = list(meta.output_tensor_meta(0).sizes())
        return (
            "executorch",
            [{"tensor": name, "role": name, "dtype": "int64", "shape": shape} for name in m.names],
            [{"tensor": output_names[0], "role": output_names[0], "dtype": "float32", "shape": ["batch", *out[1:]]}],
        )
    import onnxruntime as ort

    s = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    dtype = {"tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(float)": "float32"}
    inputs = [
        {"tensor": i.name, "role": i.name, "dtype": dtype.get(i.type, i.type), "shape": list(i.shape)}
        for i in s.get_inputs()
    ]
    outputs = [
        {"tensor": o.name, "role": r, "dtype": dtype.get(o.type, o.type), "shape": list(o.shape)}
        for o, r in zip(s.get_outputs(), output_names)
    ]
    return "onnxruntime", inputs, outputs


# MediaPipe Tasks read the metadata the Task Library's writer embeds (tokenizer, vocab, labels). Measured
# (mediapipe 1.2.3, 300 texts, tiny to 6-layer MiniLM models): MediaPipe's TextClassifier returns exactly
# LiteRT's logits on the per-row int8 model; the Task Library's BertNLClassifier (tflite-support 0.4.4)
# reads its per-row-scaled int8 word-embedding table as zeros (63-146 of 300 labels right), so the
# bundle points apps at MediaPipe. MediaPipe refuses int8 outputs: the graph dequantizes them.
TEXT_CLASSIFIER = """The model carries TFLite text-classifier metadata (BERT tokenizer, vocab, labels), so
MediaPipe's TextClassifier loads it directly and tokenizes for you (scores are the model's raw
logits; its tokenizer keeps accents, which `app_check.py` and the Python tokenizer strip):

Kotlin (Android, `com.google.mediapipe:tasks-text`; keep `.tflite` uncompressed: `androidResources {{ noCompress 'tflite' }}`):
```kotlin
// import com.google.mediapipe.tasks.core.BaseOptions
// import com.google.mediapipe.tasks.text.textclassifier.TextClassifier
val options = TextClassifier.TextClassifierOptions.builder()
    .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file}").build())
    .build()
val classifier = TextClassifier.createFromOptions(context, options)
val categories = classifier.classify("a gorgeous, witty, seductive movie.")
    .classificationResult().classifications()[0].categories()   // categoryName(), score(), best first
```

Swift (iOS, CocoaPods `MediaPipeTasksText`):
```swift
import MediaPipeTasksText
let classifier = try TextClassifier(modelPath: Bundle.main.path(forResource: "{stem}", ofType: "tflite")!)
let categories = try classifier.classify(text: "a gorgeous, witty, seductive movie.")
    .classificationResult.classifications.first?.categories ?? []   // categoryName, score, best first
```

Not the TFLite Task Library (`BertNLClassifier`, tflite-support 0.4.4, deprecated): it reads the
same metadata, but its runtime reads the per-row-scaled int8 word-embedding table as zeros and
returns wrong labels.

"""


def preprocessor_gap(token_card: dict[str, Any], input_names: tuple[str, ...]) -> str | None:
    """Why MediaPipe's (and the Task Library's) BERT preprocessor cannot feed this model; None when it can.
    What it does, from tflite-support's bert_preprocessor.cc (MediaPipe's calculator does the same): reads a
    WordPiece or SentencePiece tokenizer from the metadata, fills exactly three tensors (ids, segment ids,
    mask), frames the text with the literal tokens [CLS] and [SEP], pads with id 0, lowercases ASCII."""
    if token_card["type"] == "byte_level_bpe":
        return "their BERT preprocessor reads WordPiece or SentencePiece tokenizers, not byte-level BPE"
    if "token_type_ids" not in input_names:
        return "their BERT preprocessor fills three input tensors (ids, mask, segment ids); this model takes two"
    if token_card["type"] == "sentencepiece_unigram":
        framing = (token_card.get("cls"), token_card.get("sep"))
        if framing != ("[CLS]", "[SEP]"):
            return (
                "their BERT preprocessor frames text with the literal tokens [CLS] and [SEP] and pads with id 0; "
                f"this SentencePiece vocabulary frames with {framing[0]} and {framing[1]}"
            )
        return "edgepipe does not write the SentencePiece model file that their SentencePiece metadata needs"
    return None


def tokenizing(card: dict[str, Any]) -> str:
    """The bundle README's sentence on how an app turns text into ids, by tokenizer family."""
    if card["type"] == "bert_wordpiece":
        return (
            f"tokenize with `{card['vocab']}` (BERT WordPiece, lowercase={str(card.get('lowercase')).lower()}). "
            "`app_check.py` is a reference implementation (Python, numpy only)."
        )
    family = {"byte_level_bpe": "byte-level BPE", "sentencepiece_unigram": "SentencePiece Unigram"}[card["type"]]
    return (
        f"tokenize with `{card['tokenizer_json']}` ({family}; Hugging Face `tokenizers` reads it on Android "
        "and iOS, swift-transformers on iOS). `app_check.py` is a reference implementation (Python, numpy only)."
    )


def length_signatures_text(buckets: dict[str, int], seq_len: int, n_inputs: int, file: str, main: str) -> str:
    """The README paragraph on the TFLite length signatures (export.tflite_buckets)."""
    if not buckets:
        return ""
    names = ", ".join(f"`{k}` `[1, {v}]`" for k, v in buckets.items())
    first = next(iter(buckets))
    args = ", ".join(f'"args_{i}" to x{i}' for i in range(n_inputs))
    where = (
        "in the same file"
        if file == main
        else f"in `{file}` (the same model; `{main}` has the default signature only, because MediaPipe and the "
        "Task Library refuse a model with more than one)"
    )
    return f"""
Shorter texts run faster through a length signature {where}: {names} (same inputs and
output; the default signature takes `[1, {seq_len}]`). Pad a text to the shortest signature that holds
its tokens and run that one (what `app_check.py` does):

```kotlin
interpreter.runSignature(mapOf({args}), mapOf("output_0" to output), "{first}")   // IntArray(1 x {buckets[first]}) each
```
```swift
let runner = try interpreter.signatureRunner(with: "{first}")   // TensorFlowLiteSwift 2.10+
```
"""


def write_bundle(
    directory: Path,
    model_file: Path,
    tokenizer: Tokenizer,
    labels: list[str],
    seq_len: int,
    facts: dict[str, Any],
    task: Task,
    arch: Architecture,
    extra_files: tuple[Path, ...] = (),
    tflite_metadata: bool = False,
    calibration: dict[str, Any] | None = None,
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    token_card = arch.tokenizer_card(tokenizer.hf, tokenizer.directory)
    vocab = tokenizer.directory / token_card.get("vocab", token_card.get("tokenizer_json", "tokenizer.json"))
    files = []
    for src in (model_file, vocab, APP_CHECK, *extra_files):
        dst = directory / src.name
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        files.append(dst)
    if labels:  # an embedding model has none
        write_bytes_atomic(directory / "labels.txt", ("\n".join(labels) + "\n").encode())
    shipped = directory / model_file.name
    runtime, inputs, outputs = describe_io(shipped, arch.input_names, task.output_names)
    gap = preprocessor_gap(token_card, arch.input_names)
    buckets = LiteRTModel(shipped).signatures if runtime == "litert" else {}
    buckets = {k: v for k, v in buckets.items() if v < seq_len}
    lengths_file = shipped
    if runtime == "litert" and task.task_library_gap:
        facts = facts | {
            "task_library_metadata_missing": f"no text-classifier metadata for MediaPipe: {task.task_library_gap}"
        }
    if runtime == "litert" and task.task_library and gap is not None:
        facts = facts | {"task_library_metadata_missing": f"no text-classifier metadata for MediaPipe: {gap}"}
    if tflite_metadata and runtime == "litert" and task.task_library and gap is None:
        if buckets:  # MediaPipe and the Task Library load one-subgraph models only: two files
            lengths_file = directory / f"{shipped.stem}.lengths.tflite"
            with atomic_path(lengths_file) as tmp:
                shutil.copyfile(shipped, tmp)
            files.append(lengths_file)
            default_signature_only(shipped, shipped)
        names = {i["role"]: i["tensor"] for i in inputs}
        write_metadata(
            shipped,
            shipped,
            directory / vocab.name,
            directory / "labels.txt",
            names["input_ids"],
            names["attention_mask"],
            names["token_type_ids"],
        )
        facts = facts | {"task_library_metadata": task.task_library, "app_api": task.app_api}
    card = {
        "format": "edgepipe-bundle/1",
        "model": {
            "file": shipped.name,
            "runtime": runtime,
            "bytes": shipped.stat().st_size,
            "sha256": sha256_file(shipped),
        }
        | facts,
        "inputs": inputs,
        "outputs": outputs,
        "max_sequence_length": seq_len,
        **({"length_signatures": {"file": lengths_file.name, "signatures": buckets}} if buckets else {}),
        "tokenizer": token_card,
        "task": task.card(labels, calibration),
        "labels": labels,
    }
    write_json_atomic(directory / "model_card.json", card)
    segments = "token_type_ids" in arch.input_names
    tokenize = tokenizing(token_card)
    if task.inputs == "text_pair":
        tokenize += (
            " The two texts go in as one input, framed by the tokenizer's pair template and truncated "
            "longest-first (`app_check.py`'s `Framing` does both)."
        )
    snippet = SNIPPETS[runtime].format(
        seq=seq_len,
        n=outputs[0]["shape"][-1],
        out=task.output_names[0],
        kotlin_answer=task.kotlin_answer,
        count={2: "two", 3: "three"}.get(len(arch.input_names), str(len(arch.input_names))),
        roles=", ".join(
            {"input_ids": "ids", "attention_mask": "mask", "token_type_ids": "segment ids"}[r] for r in arch.input_names
        ),
        tokenize=tokenize,
        tokenize_cap=tokenize[0].upper() + tokenize[1:],
        token_file=vocab.name,
        kotlin_arrays="ids, mask, segments" if segments else "ids, mask",
        onnx_names=", ".join(f"`{r}`" for r in arch.input_names),
        kotlin_segments=(
            ',\n    "token_type_ids" to OnnxTensor.createTensor(env, LongBuffer.wrap(LongArray(ids.size)), shape)'
            if segments
            else ""
        ),
        swift_feeds='"input_ids": ids, "attention_mask": mask' + (', "token_type_ids": segments' if segments else ""),
        kotlin_segments_et=(",\n    EValue.from(Tensor.fromBlob(LongArray(ids.size), shape))" if segments else ""),
        swift_tensors=", ".join(
            f"Tensor<Int64>({v}, shape: shape)" for v in (["ids", "mask", "segments"] if segments else ["ids", "mask"])
        ),
        max_batch=inputs[0]["shape"][0].split("<=")[-1] if runtime == "executorch" else 1,
        file=model_file.name,
        stem=model_file.stem,
        buckets=length_signatures_text(buckets, seq_len, len(arch.input_names), lengths_file.name, shipped.name),
        config=extra_files[0].name if extra_files else "",
        metadata=TEXT_CLASSIFIER.format(file=model_file.name, stem=model_file.stem)
        if "task_library_metadata" in facts
        else (
            f"No TFLite text-classifier metadata (MediaPipe TextClassifier, Task Library BertNLClassifier): "
            f"{facts['task_library_metadata_missing'].split(': ', 1)[1]}. Tokenize with the shipped tokenizer files.\n\n"
            if "task_library_metadata_missing" in facts
            else ""
        ),
    )
    metric = facts.get(f"test_{task.metric}")
    what = (
        f"Labels: {', '.join(labels)}. "
        if labels
        else f"Output: {outputs[0]['shape'][-1]}-dim L2-normalised embeddings. "
    )
    head = f"# {model_file.name}\n\n{what}" + (f"Test {task.metric} {metric:.1%}. " if metric is not None else "")
    example = '"a gorgeous, witty movie"' if task.inputs == "text" else '"the first text" "the second text"'
    head += f"{shipped.stat().st_size / 1e6:.1f} MB, sha256 `{card['model']['sha256'][:16]}…`.\n\nCheck the bundle: `python3 app_check.py . {example}`\n\n"
    write_bytes_atomic(directory / "README.md", (head + snippet).encode())
    return files + [directory / n for n in ("labels.txt", "model_card.json", "README.md") if (directory / n).exists()]


def run(
    ctx: Stages,
    *,
    target: str,
    role: str,
    artifact: Artifact,
    tokenizer: Tokenizer,
    labels: list[str],
    seq_len: int,
    tflite_metadata: bool,
    task: Task,
    arch: Architecture,
    edgepipe_version: str,
    app_check_sha256: str,
    calibration: dict[str, Any] | None = None,
) -> Result:
    """The stage: `bundles/TARGET/` for the shipped role's artifact."""
    directory, model_file = ctx.path(f"bundles/{target}"), ctx.path(artifact.path)
    extra = (model_file.with_suffix(".required_operators.config"),) if target == "ort" else ()
    facts = {"precision": "int8", f"test_{task.metric}": artifact.get(f"test_{task.metric}"), "source_model": role}
    files = write_bundle(
        directory, model_file, tokenizer, labels, seq_len, facts, task, arch, extra, tflite_metadata, calibration
    )
    return {"path": ctx.rel(directory), "files": sorted(f.name for f in files)}, files


def app_check_sha256() -> str:
    return sha256_file(APP_CHECK)


def read_card(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "model_card.json").read_text())
