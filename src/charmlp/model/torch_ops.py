"""torch as the layer library's array module in training: torch's own functions, plus what training alone needs.

charmlp.model.layers writes each forward once over an array module `xp`: numpy for sample.py, this module for
training. It reads as torch (`xp.tanh`, `xp.no_grad`, ...) and adds `dropout_mask`, which only training runs, so the
layer library itself never imports torch, and the primitives whose torch form is one fused call (GELU, layer norm,
causal attention, the causal mean), each beside its numpy twin in charmlp.model.numpy_ops, tested equal.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

DROPOUT_BITS = 15  # resolution of the CPU dropout mask: p is rounded to a multiple of 2^-15


def __getattr__(name: str) -> Any:
    """Any other name is torch's (looked up once, then kept here: a module attribute costs a dict lookup)."""
    value = getattr(torch, name)
    globals()[name] = value
    return value


def dropout_mask(h: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout's mask for h (0, or 1 / (1 - p)); on the CPU cut from 64-bit random numbers, four per draw.

    torch's CPU dropout draws one Mersenne Twister number per element: 4 ms for a 256 x 1024 layer, a third
    of an update of experiment=best_mlp. Each 64-bit draw here gives four 15-bit uniform numbers (the top bit of
    every 16-bit quarter is dropped), 8x less generator work. The keep probability is rounded to a multiple
    of 2^-15 and the survivors are scaled by that rounded value, so each element's expectation is unchanged.
    Other devices keep F.dropout's mask. Both draw from torch's global generator, so a seed fixes the masks.
    """
    if h.device.type != "cpu":
        return F.dropout(torch.ones_like(h), p)
    n = h.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    uniform = draws.view(torch.int16)[:n].view(h.shape).bitwise_and_(2**DROPOUT_BITS - 1)
    threshold = min(round(p * 2**DROPOUT_BITS), 2**DROPOUT_BITS - 1)  # p near 1 still keeps a few
    keep = uniform >= threshold
    return keep.to(h.dtype).mul_(2**DROPOUT_BITS / (2**DROPOUT_BITS - threshold))


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation in one call (makemore.py's NewGELU):
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return F.gelu(x, approximate="tanh")


def layer_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> torch.Tensor:
    """(x - mean) / sqrt(biased var + eps) over the last dim, * gamma + beta."""
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(head size) + mask above the diagonal at -inf) v, per head: (B, heads, T, hs)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def causal_mean(x: torch.Tensor) -> torch.Tensor:
    """Position t of (B, T, C) -> the mean of positions 0..t."""
    steps = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
    return x.cumsum(1) / steps[:, None]


def causal_windows(ids: torch.Tensor, n: int) -> torch.Tensor:
    """(B, T) ids -> (B, T, n): at position t the ids t-n+1..t, '.' (id 0) before the start."""
    return F.pad(ids, (n - 1, 0)).unfold(1, n, 1)


def mixture(logits: list[torch.Tensor]) -> torch.Tensor:
    """The log of the members' average probability: log(mean_k softmax(logits_k)), over the last dim."""
    logp = torch.stack([torch.log_softmax(z, -1) for z in logits])
    return torch.logsumexp(logp, 0) - math.log(len(logits))


def lerp_(a: torch.Tensor, b: torch.Tensor, weight: float) -> None:
    """a += weight * (b - a), in place; b in a's dtype (bf16 statistics under autocast, fp32 buffers)."""
    a.lerp_(b.to(a.dtype), weight)
