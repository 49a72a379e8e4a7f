"""The training loss of every family, in nats per prediction: a window's next character, or each position of a
whole word up to its end token (padding, charmlp.data.windows.PAD, is no prediction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charmlp.data.windows import PAD


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """logits (batch, vocab) against targets (batch,) for windows, (batch, T, vocab) against (batch, T) for words; an
    ensemble's members while training, (members, ...) logits: the mean of the members' losses, so each member's
    gradient is that of its own loss over the number of members (AdamW's step does not depend on that scale)."""
    if logits.ndim == y.ndim + 2:
        if reduction != "mean":  # a sum would count each prediction once per member (predictions() counts it once)
            raise ValueError("an ensemble's stacked training logits take reduction='mean' only")
        y = y.expand(logits.shape[0], *y.shape)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=PAD, reduction=reduction)


def predictions(y: torch.Tensor) -> torch.Tensor:
    """How many predictions the targets ask for (PAD left out)."""
    return (y != PAD).sum()
