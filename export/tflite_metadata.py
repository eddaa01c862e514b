"""TFLite Task Library metadata (BertNLClassifier): tokenizer, vocab, labels inside the model.

Written with tflite-support's own metadata writer, in a subprocess: tflite-support 0.4.4
declares protobuf<4 (installed with --no-deps beside protobuf 7) and only imports with
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, which would slow every other protobuf
user (onnx) in this process. Also needs the system library libusb-1.0.

    python -m edgepipe.export.tflite_metadata write SRC DST VOCAB LABELS IDS MASK SEGMENT
    python -m edgepipe.export.tflite_metadata read MODEL       # JSON on stdout

The writer rebuilds the whole flatbuffer with its 2022 schema, which predates blockwise
quantization: a 4-bit embedding table lost its block scales and LiteRT refused the model
("Blockwise quantization details are missing"). So only what the writer adds is kept: its
metadata entries and packed files are grafted onto the untouched model, parsed and rebuilt
with LiteRT's own current schema (`graft`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgepipe.errors import ModelError

INSTALL = "pip install --no-deps 'tflite-support==0.4.4' and apt-get install libusb-1.0-0 (or --set export.tflite_metadata=false)"


def _run(*args: str) -> str:
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.export.tflite_metadata", *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.strip().splitlines() if "GetPrototype" not in l] or ["no output"]
        if "tflite_support" in proc.stderr and ("No module named" in proc.stderr or "libusb" in proc.stderr):
            raise ModelError(f"writing TFLite metadata needs tflite-support: {INSTALL}")
        raise ModelError(f"TFLite metadata tool failed: {lines[-1][:200]}")
    return proc.stdout


def write_metadata(src: Path, dst: Path, vocab: Path, labels: Path, ids: str, mask: str, segment: str) -> None:
    _run("write", str(src), str(dst), str(vocab), str(labels), ids, mask, segment)


def read_metadata(model: Path) -> dict[str, Any]:
    """{"metadata": <the flatbuffer as JSON>, "files": [packed associated files]}"""
    return json.loads(_run("read", str(model)))


def require_tflite_support() -> None:
    """Fail at the start of a run, not after training, when the writer cannot load."""
    _run("check")


def graft(original: bytes, written: bytes) -> bytes:
    """`original` with the metadata entries `written` added to it and the files packed into it."""
    import io
    import zipfile

    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(original, 0)
    source = schema.ModelT.InitFromPackedBuf(written, 0)
    if any(b.offset for b in model.buffers or []):  # weights stored after the flatbuffer (models > 2 GB)
        raise ValueError("cannot add metadata to a model whose weights lie outside its flatbuffer")
    model.metadata = model.metadata or []
    have = {m.name for m in model.metadata}
    for entry in source.metadata or []:
        if entry.name in have:
            continue
        buffer = schema.BufferT()
        buffer.data = source.buffers[entry.buffer].data
        model.buffers.append(buffer)
        added = schema.MetadataT()
        added.name, added.buffer = entry.name, len(model.buffers) - 1
        model.metadata.append(added)
    builder = flatbuffers.Builder(len(original) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(io.BytesIO(written)) as packed, zipfile.ZipFile(out, "a") as zf:
        for name in packed.namelist():  # as tflite-support packs them: a zip appended to the flatbuffer
            zf.writestr(name, packed.read(name))
    return out.getvalue()


def _main(argv: list[str]) -> int:
    from tflite_support import metadata
    from tflite_support.metadata_writers import bert_nl_classifier, metadata_info, writer_utils

    if argv[0] == "check":
        return 0
    if argv[0] == "write":
        src, dst, vocab, labels, ids, mask, segment = argv[1:8]
        writer = bert_nl_classifier.MetadataWriter.create_for_inference(
            writer_utils.load_file(src), metadata_info.BertTokenizerMd(vocab), [labels], ids, mask, segment
        )
        tmp = dst + ".tmp"
        writer_utils.save_file(graft(writer_utils.load_file(src), writer.populate()), tmp)
        os.replace(tmp, dst)
        return 0
    display = metadata.MetadataDisplayer.with_model_file(argv[1])
    print(
        json.dumps(
            {"metadata": json.loads(display.get_metadata_json()), "files": display.get_packed_associated_file_list()}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
