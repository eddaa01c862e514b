"""Keeping the user's console readable: libraries that log or print what users need not see.

One place for every silencer (the CLI's start-up, the quantizer's root-logger warnings,
the TFLite converter's per-pass output), so a new noisy library is handled here only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

# Loggers of libraries that report routine exporter/converter steps at WARNING or INFO.
CHATTY = ("torch.onnx", "torch._export", "torch.export", "onnxscript", "transformers", "torchao", "torch.utils._pytree")


def litert_environment() -> None:
    """Before the first `import litert_torch`: its converter's bundled TensorFlow prints `I0000 ... oneDNN
    custom operations are on` while the library loads (on CPUs with AVX512_VNNI/AMX, where oneDNN is on by
    default), before any log level applies; TF_ENABLE_ONEDNN_OPTS=0 stops it and changes no output
    (measured: identical fp32 and int8 .tflite sha256 with it on and off). litert-torch's own
    `[START] Write Model` progress lines go with LITERT_TORCH_SHOW_PROGRESS=0."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's and jaxlib's INFO lines
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "0")


def offline_environment() -> None:
    """Before heavy imports: no hub downloads, no tokenizer fork warnings, no C++ start-up INFO lines."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    litert_environment()
    # torchao (pulled in by litert-torch, imported by transformers when present) warns about its
    # CUDA kernels and deprecated pytree registrations on every CPU-only start: silenced before
    # anything imports it, after torch's own logging set-up (which resets levels) has run
    logging.getLogger("torchao").setLevel(logging.ERROR)
    import torch  # noqa: F401 - its logging set-up must run before the level below is set

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """After torch is imported (its logging set-up resets levels): hide exporter chatter."""
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantizer (and litert-torch) warn on the root logger, e.g. for every LayerNorm weight
    quantized per tensor."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """C++ libraries that write to file descriptor 2 themselves (LiteRT prints `INFO: Created TensorFlow
    Lite XNNPACK delegate for CPU.` on the first allocate_tensors, whatever the log level): their
    output is kept aside and shown only if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            tmp.seek(0)
            sys.stderr.write(tmp.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def quiet_output() -> Iterator[None]:
    """Python-level stdout/stderr of a converter that prints per-pass progress, and its root-logger warnings."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), quiet_root_logger():
        yield
