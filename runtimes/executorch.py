"""ExecuTorch adapter on the host, over `executorch.runtime` (XNNPACK-delegated .pte programs).
The program handling is the device runner's, so host checks and device numbers run the same code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe.devices.standalone import runner
from edgepipe.errors import ModelError
from edgepipe.quiet import native_stderr_captured
from edgepipe.runtimes.runner_backed import NamedFeeds
from edgepipe.tokenized import TokenizedSplit


class ExecuTorchModel(NamedFeeds, runner.ExecuTorchModel):
    def __init__(self, path: Path, threads: int = 1):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"ExecuTorch program {self.path} does not exist; run compress-and-export first")
        try:
            with native_stderr_captured():  # the runtime's cpuinfo lines on the first load
                super().__init__(str(self.path), threads)
        except runner.UserError as e:
            raise ModelError(str(e)) from None

    def predict(self, split: TokenizedSplit) -> np.ndarray:
        """Outputs for every example, in batches of 32 padded to the split's full length (as an app would)."""
        arrays = {n: getattr(split, n) for n in self.names}
        return np.concatenate(
            [self({k: v[s : s + 32] for k, v in arrays.items()}) for s in range(0, len(split), 32)]
        ).astype(np.float32)
