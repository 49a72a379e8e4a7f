"""The pictures of a run: the 2D map of the embedding table C, and the loss curves (the seed's log10 view)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def embedding_2d(C: torch.Tensor) -> tuple[torch.Tensor, str]:
    """C itself when it is 2D (the lecture's picture), else its projection on the top two principal axes."""
    C = C.detach().float().cpu()
    if C.shape[1] <= 2:
        return torch.nn.functional.pad(C, (0, 2 - C.shape[1])), "C[:, 0] and C[:, 1]"
    centred = C - C.mean(0)
    _, _, Vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ Vh[:2].T, "first two principal components of C"


def embedding_figure(C: torch.Tensor, labels: Sequence[str]) -> Figure:
    """Each character at its place in the embedding (seed: the 2D scatter of C with the letters on it)."""
    from matplotlib.figure import Figure

    points, how = embedding_2d(C)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=200)
    for (x, y), label in zip(points.tolist(), labels):
        ax.text(x, y, label, ha="center", va="center", color="white")
    ax.set_title(f"character embedding: {how}")
    ax.grid(True, alpha=0.3)
    return fig


def loss_figure(train: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]], smooth: int = 20) -> Figure:
    """log10 of the train loss (a moving average over `smooth` points) and of the val loss against updates."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if train:
        steps, losses = zip(*train)
        loss = torch.tensor(losses).log10()
        k = max(1, min(smooth, len(loss)))
        smoothed = torch.nn.functional.avg_pool1d(loss[None, None], k, stride=1)[0, 0]
        ax.plot(steps[k - 1 :], smoothed.tolist(), label=f"train (mean of {k} logs)")
    if val:
        steps, losses = zip(*val)
        ax.plot(steps, torch.tensor(losses).log10().tolist(), "o-", label="val")
    ax.set_xlabel("SGD update")
    ax.set_ylabel("log10 loss")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig


def save_figure(fig: Figure, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def lr_find_figure(exponents: Sequence[float], losses: Sequence[float], suggested: float) -> Figure:
    """The seed's plot: loss of each update against the exponent of its learning rate."""
    import math

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.plot(exponents, losses, lw=0.8)
    ax.axvline(math.log10(suggested), color="tab:orange", ls="--", label=f"suggested lr {suggested:.3g}")
    ax.set_xlabel("log10 learning rate")
    ax.set_ylabel("loss")
    ax.set_ylim(top=min(max(losses), 3 * min(losses) + 5))
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig
