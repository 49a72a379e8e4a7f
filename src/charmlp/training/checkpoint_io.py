"""Checkpoint writing that never leaves a half-written file in place of a good one."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from charmlp.rundir.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose saves go through a temporary file and a rename.

    (Lightning's own "atomic" save stages local files in the system temp dir, so the final move can be a copy.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))
