"""LiteRT (TFLite) adapter on the host, over `ai-edge-litert` - the maintained successor of
`tflite-runtime` (which needs numpy<2, has no cp311 aarch64 wheel, and gave wrong
results for per-row int8 embeddings). XNNPACK is LiteRT's default CPU delegate.

The interpreter handling (input order, padding to the model's fixed length, delegate
detection) is the device runner's, so host checks and device numbers run the same code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices.standalone import runner
from edgepipe.errors import ModelError
from edgepipe.quiet import native_stderr_captured
from edgepipe.runtimes.runner_backed import NamedFeeds
from edgepipe.tokenized import TokenizedSplit


class LiteRTModel(NamedFeeds, runner.LiteRTModel):
    def __init__(self, path: Path, threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"TFLite model {self.path} does not exist; run compress-and-export first")
        try:
            with native_stderr_captured():  # LiteRT's own "Created TensorFlow Lite XNNPACK delegate" line
                super().__init__(str(self.path), threads)
        except runner.UserError as e:
            raise ModelError(
                f"{e}; the file is corrupt or the runtime is missing (pip install 'ai-edge-litert==2.3.0')"
            ) from None

    def predict(self, split: TokenizedSplit) -> np.ndarray:
        """Each text at its own length, as the device runner's metric pass and an app feed it: a model
        with length signatures runs each through the shortest that holds it."""
        return runner.model_outputs(self, split.inputs(), len(split)).astype(np.float32)

    @property
    def signatures(self) -> dict[str, int]:
        """Signature name -> the sequence length it takes (the default first)."""
        if not self.buckets:
            return {"serving_default": self.seq_len}
        default = self.buckets[-1]
        return {default[1]: default[0]} | {name: n for n, name, *_ in self.buckets[:-1]}
