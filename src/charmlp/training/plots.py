"""The pictures of a run: the 2D map of the embedding table C, the loss curves (the seed's log10 view), the
network's diagnostics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from charmlp.training.diagnostics import Reading


def embedding_2d(C: torch.Tensor) -> tuple[torch.Tensor, tuple[str, str]]:
    """C itself when it is 2D (the lecture's picture), else its projection on the top two principal axes.

    Returns the (vocab, 2) points and the two axis labels.
    """
    C = C.detach().float().cpu()
    if C.shape[1] <= 2:
        second = "C[:, 1]" if C.shape[1] == 2 else "(C has one column)"
        return torch.nn.functional.pad(C, (0, 2 - C.shape[1])), ("C[:, 0]", second)
    centred = C - C.mean(0)
    _, S, Vh = torch.linalg.svd(centred, full_matrices=False)
    share = (S**2 / (S**2).sum()).tolist()  # the fraction of the variance along each principal axis
    return centred @ Vh[:2].T, (f"PC 1 ({share[0]:.0%} of variance)", f"PC 2 ({share[1]:.0%} of variance)")


def spread_labels(points: torch.Tensor, gap: float = 0.045, rounds: int = 200) -> torch.Tensor:
    """Places for the labels of `points` (n x 2, in a unit square) about `gap` apart, each near its point.

    A few rounds of pushing every too-close pair apart, with a weak pull back to the point: enough for the
    27 letters of a vocabulary, deterministic, and no extra dependency.
    """
    n = len(points)
    angles = torch.arange(n, dtype=torch.float32)  # tells identical points apart, always the same way
    places = points + 1e-4 * torch.stack([angles.cos(), angles.sin()], 1)
    for _ in range(rounds):
        apart = places[:, None] - places[None]  # (n, n, 2): from each other label to this one
        distance = apart.norm(dim=-1).fill_diagonal_(gap)
        push = (gap - distance).clamp(min=0)
        if not push.any():
            break
        places = places + 0.5 * (apart / distance[..., None] * push[..., None]).sum(1) + 0.05 * (points - places)
    return places


def embedding_figure(C: torch.Tensor, labels: Sequence[str], token: str = ".") -> Figure:
    """Each character at its place in the embedding (seed: the 2D scatter of C with the letters on it).

    Each letter sits on its place, as in the lecture, except where characters crowd: there it is pushed a
    little aside, and a dot with a thin line marks its exact place, so close characters stay readable. The
    start/end `token`, a glyph too small to see alone, is red, bold and ringed.
    """
    from matplotlib import patheffects
    from matplotlib.figure import Figure

    points, (xlabel, ylabel) = embedding_2d(C)
    low, size = points.min(0).values, (points.max(0).values - points.min(0).values).clamp(min=1e-6)
    unit = (points - low) / size  # spread in a unit square: the axes are square
    spread = spread_labels(unit)
    moved = (spread - unit).norm(dim=1) > 0.01
    places = torch.where(moved[:, None], spread * size + low, points)
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot()
    outline = [patheffects.withStroke(linewidth=3, foreground="white")]
    ax.plot(points[moved, 0], points[moved, 1], "o", ms=3, color="tab:blue")
    for (x, y), (lx, ly), label in zip(points.tolist(), places.tolist(), labels):
        if (x, y) != (lx, ly):
            ax.plot([x, lx], [y, ly], lw=0.5, color="0.6")
        is_token = label == token
        if is_token:
            ax.plot(x, y, "o", ms=10, mfc="none", mec="tab:red", mew=2, label=f"'{token}' (start/end of a word)")
        ax.text(
            lx,
            ly,
            label,
            ha="center",
            va="center",
            fontsize=16 if is_token else 12,
            fontweight="bold" if is_token else "normal",
            color="tab:red" if is_token else "0.1",
            path_effects=outline,
        )
    ax.update_datalim(torch.cat([points, places]).numpy())  # text does not widen the axes by itself
    ax.margins(0.06)
    ax.autoscale_view()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("character embedding C")
    if token in labels:
        ax.legend(fontsize=9)
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


def save_figure(fig: Figure, path: str) -> np.ndarray:
    """Draw the figure once, write it as a PNG and return its pixels (H x W x 3), e.g. for TensorBoard.

    Drawing is most of a figure's cost (TensorBoard's add_figure would draw it a second time).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    fig.tight_layout()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    imsave(path, pixels)
    return pixels


def lr_find_figure(
    exponents: Sequence[float],
    losses: Sequence[float],
    centres: Sequence[float],
    smoothed: Sequence[float],
    suggested: float,
) -> Figure:
    """The seed's plot, loss of each update against the exponent of its lr, with the smoothed curve on it.

    `centres`, `smoothed`: the moving average that lr_find.suggest() reads (lr_find.smooth()). The y range
    follows that curve, from its bottom to its highest point before the bottom: the raw losses' first
    updates and the blow-up at large lrs would squash the valley that the suggestion comes from.
    """
    import math

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    window = len(losses) - len(smoothed) + 1
    ax.plot(exponents, losses, lw=0.6, color="tab:blue", alpha=0.35, label="loss before each update")
    ax.plot(centres, smoothed, lw=2, color="tab:blue", label=f"mean of {window} updates")
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    bottom, top = smoothed[lowest], max(smoothed[: lowest + 1])
    ax.plot(
        centres[lowest], bottom, "o", color="tab:red", label=f"lowest: {bottom:.2f} at lr {10 ** centres[lowest]:.3g}"
    )
    ax.axvline(
        math.log10(suggested), color="tab:orange", ls="--", label=f"suggested lr {suggested:.3g} (lowest / 10^0.5)"
    )
    span = max(top - bottom, 0.1 * abs(bottom), 1e-3)  # a flat or rising curve still gets a readable range
    ax.set_ylim(bottom - 0.25 * span, top + 0.1 * span)  # room below for the raw losses' scatter
    ax.set_xlabel("log10 learning rate")
    ax.set_ylabel("cross-entropy loss")
    lr_axis = ax.secondary_xaxis("top")  # the same axis in plain learning rates
    ticks = [e for e in range(-3, 1) if exponents[0] <= e <= exponents[-1]]
    lr_axis.set_xticks(ticks, [f"{10**e:g}" for e in ticks])
    lr_axis.set_xlabel("learning rate")
    ax.legend(fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def diagnostics_figure(reading: Reading, history: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """makemore part 3's four pictures: the last reading's activation, activation-gradient and weight-gradient
    histograms (one line per layer or weight), and every reading's update:data against updates, -3 dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 8))
    panels = fig.subplots(2, 2).ravel()
    titles = (
        ("diag/activations/", f"activations after each nonlinearity (update {reading.step})"),
        ("diag/act_grads/", "gradient at each nonlinearity's output"),
        ("diag/weight_grads/", "weight gradients"),
    )
    for ax, (prefix, title) in zip(panels, titles):
        for tag, values in reading.values.items():
            if not tag.startswith(prefix):
                continue
            name, values = tag[len(prefix) :], values[np.isfinite(values)]
            if not values.size:
                continue
            counts, edges = np.histogram(values, bins=50, density=True)
            label = f"{name}: mean {values.mean():+.2g}, std {values.std():.2g}"
            saturation = reading.scalars.get(f"diag/saturation/{name}")
            if prefix == "diag/activations/" and saturation is not None:
                label += f", saturated {saturation:.1%}"
            ax.plot((edges[:-1] + edges[1:]) / 2, counts, label=label)
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = panels[3]
    for tag, points in history.items():
        if tag.startswith("diag/update_data/") and points:
            steps, values = zip(*points)
            ax.plot(steps, values, ".-", label=tag.removeprefix("diag/update_data/"))
    ax.axhline(-3, color="k", ls="--", lw=1, label="-3 (the lecture's guide)")
    ax.set_title("update:data, log10 std(update) / std(weight)")
    ax.set_xlabel("SGD update")
    ax.legend(fontsize=8)
    for ax in panels:
        ax.grid(True, alpha=0.3)
    return fig
