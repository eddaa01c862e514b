"""LiteRT (TFLite) adapter on the host, over `ai-edge-litert` - the maintained successor of
`tflite-runtime` (which needs numpy<2, has no cp311 aarch64 wheel, and gave wrong
results for per-row int8 embeddings). XNNPACK is LiteRT's default CPU delegate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.errors import ModelError
from edgepipe.pipeline.data import TokenizedSplit

INSTALL = "pip install 'ai-edge-litert==2.3.0'"


class LiteRTModel:
    def __init__(self, path: Path, threads: int = 1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ModelError(f"running TFLite models needs ai-edge-litert, which is not installed; {INSTALL}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"TFLite model {self.path} does not exist; run compress-and-export first")
        try:
            self.interpreter = Interpreter(str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"TFLite model {self.path} cannot be loaded ({str(e).strip().splitlines()[0][:160]}); the file is corrupt") from None
        self.inputs = sorted(self.interpreter.get_input_details(), key=lambda d: d["name"])  # ..._args_0, _1, _2
        self.output = self.interpreter.get_output_details()[0]
        self.seq_len = int(self.inputs[0]["shape"][1])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """One example ([1, seq_len] each, padded/trimmed to the model's length)."""
        for detail, arr in zip(self.inputs, (input_ids, attention_mask, token_type_ids)):
            arr = arr[:, : self.seq_len]
            if arr.shape[1] < self.seq_len:
                arr = np.pad(arr, ((0, 0), (0, self.seq_len - arr.shape[1])))
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(arr.astype(detail["dtype"])))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()

    def predict(self, split: TokenizedSplit) -> np.ndarray:
        return np.concatenate(
            [self.run(split.input_ids[i : i + 1], split.attention_mask[i : i + 1], split.token_type_ids[i : i + 1]) for i in range(len(split))]
        ).astype(np.float32)
