"""Encoder architectures, keyed by Hugging Face `model_type`: one module per architecture.

Every module of this folder is imported here, so dropping a file in registers it.
"""

from __future__ import annotations

import importlib
import pkgutil

from edgepipe.arch.base import ARCHITECTURES, Architecture, Dims, EncoderOutput, Vocabulary
from edgepipe.errors import ModelError

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "wordpiece", "bpe", "unigram", "tokenizer_json"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get(model_type: str | None) -> Architecture:
    """The adapter of `model_type`, or a one-line ModelError listing what is supported."""
    if model_type not in ARCHITECTURES:
        raise ModelError(
            f"a {model_type!r} model is not supported yet; edgepipe handles model_type {', '.join(sorted(ARCHITECTURES))} "
            "(e.g. MiniLM or BERT)"
        )
    return ARCHITECTURES[model_type]


__all__ = ["ARCHITECTURES", "Architecture", "Dims", "EncoderOutput", "Vocabulary", "get"]
