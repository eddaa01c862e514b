"""TFLite Task Library metadata (BertNLClassifier): tokenizer, vocab, labels inside the model.

Written with tflite-support's own metadata writer, in a subprocess: tflite-support 0.4.4
declares protobuf<4 (installed with --no-deps beside protobuf 7) and only imports with
PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, which would slow every other protobuf
user (onnx) in this process. Also needs the system library libusb-1.0.

    python -m edgepipe.export.tflite_metadata write SRC DST VOCAB LABELS IDS MASK SEGMENT
    python -m edgepipe.export.tflite_metadata read MODEL       # JSON on stdout
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
        writer_utils.save_file(writer.populate(), tmp)
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
