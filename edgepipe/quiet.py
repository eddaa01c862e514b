"""Keeping the user's console readable: libraries that log or print what users need not see.

One place for every silencer (the CLI's start-up, the quantizer's root-logger warnings,
the TFLite converter's per-pass output), so a new noisy library is handled here only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator

# Loggers of libraries that report routine exporter/converter steps at WARNING or INFO.
CHATTY = ("torch.onnx", "torch._export", "torch.export", "onnxscript", "transformers", "torchao", "torch.utils._pytree")


def offline_environment() -> None:
    """Before heavy imports: no hub downloads, no tokenizer fork warnings, no C++ start-up INFO lines."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # LiteRT's C++ start-up INFO lines
    # torchao (pulled in by litert-torch, imported by transformers when present) warns about its
    # CUDA kernels and deprecated pytree registrations on every CPU-only start
    logging.getLogger("torchao").setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """After torch is imported (its logging set-up resets levels): hide exporter chatter."""
    import torch  # noqa: F401 - its logging set-up must run before the levels below are set

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
def quiet_output() -> Iterator[None]:
    """Python-level stdout/stderr of a converter that prints per-pass progress, and its root-logger warnings."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), quiet_root_logger():
        yield
