"""numpy as the layer library's array module in the hand-written training update (charmlp.training.hand_step):
charmlp.model.numpy_ops, plus dropout's masks, drawn by torch_ops.dropout_mask from torch's global generator so that
a seed, a checkpoint and resume fix them as they fix autograd's (the same masks, bit for bit)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from charmlp.model import numpy_ops, torch_ops


def __getattr__(name: str) -> Any:
    """Any other name is numpy_ops' (looked up once, then kept here)."""
    value = getattr(numpy_ops, name)
    globals()[name] = value
    return value


def dropout_mask(h: np.ndarray, p: float) -> np.ndarray:
    return torch_ops.dropout_mask(torch.from_numpy(h), p).numpy()
