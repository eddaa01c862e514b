"""What the host adapters over the device runner's model classes share: the runner's models take a dict of
named arrays; the stages call `run(input_ids, attention_mask, token_type_ids)`."""

from __future__ import annotations

import numpy as np


class NamedFeeds:
    """Mixin for a runner model class (callable on `{input name: array}`)."""

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:
        """Outputs for a batch; `.copy()` because the runtimes hand back views of buffers they reuse."""
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            feeds["token_type_ids"] = token_type_ids
        return self(feeds).copy()
