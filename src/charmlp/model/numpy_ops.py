"""numpy as the layer library's array module in sample.py: numpy's own functions, plus the primitives that torch
has as one call (charmlp.model.torch_ops, their torch twins, tested equal), written out, and what the layers' training
forward and backward read (charmlp.model.numpy_train_ops adds dropout's masks). torch-free."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import numpy as np


def __getattr__(name: str) -> Any:
    """Any other name is numpy's (looked up once, then kept here)."""
    value = getattr(np, name)
    globals()[name] = value
    return value


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow for large -x


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps) * gamma + beta


def causal_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    return causal_attention_weights(q, k) @ v


def causal_attention_weights(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(head size) + mask above the diagonal at -inf): (..., T, T), each row summing to 1."""
    T = q.shape[-2]
    att = q @ k.swapaxes(-1, -2) / math.sqrt(q.shape[-1]) + np.triu(np.full((T, T), -np.inf, q.dtype), 1)
    att = np.exp(att - att.max(-1, keepdims=True))
    return att / att.sum(-1, keepdims=True)


def causal_mean(x: np.ndarray) -> np.ndarray:
    return x.cumsum(1) / np.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]


def causal_windows(ids: np.ndarray, n: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(np.pad(ids, ((0, 0), (n - 1, 0))), n, axis=1)


def mixture(logits: list[np.ndarray]) -> np.ndarray:
    logp = np.stack([z - z.max(-1, keepdims=True) for z in logits])
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))  # each member's log-probabilities
    top = logp.max(0)
    return top + np.log(np.exp(logp - top).mean(0))


# the backward's own primitives (the hand-written update is numpy's alone: no torch twins)


def scatter_rows(ids: np.ndarray, rows: np.ndarray, num: int) -> np.ndarray:
    """(num, C): row i the sum of the `rows` whose id is i (an embedding's gradient), as one product with the one-hot
    matrix: at 27 characters cheaper than np.add.at."""
    key = (num, rows.dtype)
    if key not in _EYES:
        _EYES[key] = np.eye(num, dtype=rows.dtype)
    return _EYES[key][ids].T @ rows


_EYES: dict[tuple[int, Any], np.ndarray] = {}  # one identity matrix per vocabulary size and dtype


def lerp_(a: np.ndarray, b: np.ndarray, weight: float) -> None:
    """a += weight * (b - a), in place (torch's lerp_ for weight < 0.5)."""
    a += weight * (b - a)


no_grad = contextlib.nullcontext  # numpy keeps no graph
