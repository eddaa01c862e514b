"""ONNX Runtime adapter used on the host (parity checks, evaluation).

Spinning is off: on a busy machine spinning intra-op threads were measured ~2x slower.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices.standalone.runner import ort_session_options
from edgepipe.errors import ModelError
from edgepipe.tokenized import TokenizedSplit


class OrtModel:
    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ONNX model {self.path} does not exist; run compress-and-export first")
        try:
            self.session = ort.InferenceSession(
                str(self.path), ort_session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"ONNX model {self.path} cannot be loaded ({first}); the file is corrupt or not ONNX"
            ) from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.session.run(None, {k: feeds[k] for k in self.input_names})[0]

    def predict(self, split: TokenizedSplit, batch_size: int = 64) -> np.ndarray:
        """Logits for every example, fed padded to the split's full length (as an app would)."""
        outs = [
            self.run(
                split.input_ids[s : s + batch_size],
                split.attention_mask[s : s + batch_size],
                split.token_type_ids[s : s + batch_size],
            )
            for s in range(0, len(split), batch_size)
        ]
        return np.concatenate(outs).astype(np.float32)
