"""The training loss of every family, in nats per prediction: a window's next character, or each position of a
whole word up to its end token (padding, charmlp.data.windows.PAD, is no prediction)."""

from __future__ import annotations

import numpy as np
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


def cross_entropy_grad(logits: np.ndarray, y: np.ndarray, scale: float = 1.0) -> tuple[float, np.ndarray]:
    """cross_entropy's mean in numpy, with its gradient times `scale`: (loss, scale d loss / d logits). d loss /
    d logits is (softmax - one_hot(target)) / predictions at each prediction, 0 at padding (makemore part 4's
    dlogits); `scale` -lr turns the whole backward into plain SGD's steps (every backward is linear in it)."""
    if logits.ndim == y.ndim + 2:  # an ensemble's stacked members: each prediction once per member
        y = np.broadcast_to(y, (logits.shape[0], *y.shape))
    vocab = logits.shape[-1]
    z, t = logits.reshape(-1, vocab), y.reshape(-1)
    valid = t != PAD if y.ndim > 1 else None  # whole words: positions past a word's end are no prediction
    if valid is not None and valid.all():
        valid = None
    count = len(t) if valid is None else int(valid.sum())
    if valid is not None:
        t = np.where(valid, t, 0)
    # log-sum-exp shifted by the batch's largest logit (a row's max costs 3x more at 27 columns), or by each row's own
    # max where a row lies more than 20 below it; floored at -60, where numpy's exp takes its slow path (underflow, 3x
    # the time) and the gradients would turn denormal (a product 100x slower): a softmax error below e^-40
    top = z.max()
    probs = np.exp(np.maximum(z - top, -60))
    total = probs.sum(1, keepdims=True)
    if total.min() < 2e-9:  # e^-20
        top = z.max(1, keepdims=True)
        probs = np.exp(np.maximum(z - top, -60))
        total = probs.sum(1, keepdims=True)
    at = _offsets(len(t), vocab) + t  # each target's place in the flat logits
    weight = np.float32(scale / count)
    if valid is None:
        tops = top * len(t) if np.ndim(top) == 0 else top.sum()
        loss = float(np.log(total).sum() + tops - z.take(at).sum()) / count
        probs *= weight / total
        probs.ravel()[at] -= weight
    else:  # -log softmax at the targets, summed over the predictions; padding gets no gradient
        loss = float(((np.log(total) + top)[:, 0] - z.take(at))[valid].sum()) / count
        probs *= valid[:, None] * (weight / total)
        probs.ravel()[at] -= valid * weight
    return loss, probs.reshape(logits.shape)


_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


def _offsets(rows: int, columns: int) -> np.ndarray:
    """0, columns, 2 columns, ...: where each row starts in a flat (rows, columns) array (kept per shape)."""
    if (rows, columns) not in _OFFSETS:
        _OFFSETS[(rows, columns)] = np.arange(0, rows * columns, columns)
    return _OFFSETS[(rows, columns)]
