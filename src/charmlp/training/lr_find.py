"""The seed's learning-rate sweep: one update at each of lrs = 10^linspace(-3, 0, 1000), loss against lr."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from charmlp.errors import CharmlpError
from charmlp.model.network import LayerNet
from charmlp.training.config import instantiate_group
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.loss import cross_entropy

log = logging.getLogger("charmlp")

SMOOTHING = 50  # updates per point of the smoothed curve: suggest() reads its bottom, lr_find.png draws it


def lr_sweep(
    model: LayerNet, optimizer: torch.optim.Optimizer, datamodule: NamesDataModule, exponents: torch.Tensor
) -> list[float]:
    """From the model's init, the k-th update with every lr at 10^exponents[k]; the loss before each update.

    Any optimizer, dropout or depth: the update is training's autograd one (with plain SGD the numbers of the
    hand-written update, charmlp.training.hand_step, within float rounding). Stops at the first non-finite loss:
    past it the curve says nothing.
    """
    sampler = next(iter(datamodule.train_dataloader()))
    xs, ys = sampler.draw(len(exponents))  # the same minibatches as the first updates of a training run
    model.train()  # dropout on, as in training
    losses: list[float] = []
    for x, y, exponent in zip(xs, ys, exponents.tolist()):
        for group in optimizer.param_groups:
            group["lr"] = 10**exponent
        loss = cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
    return losses


def smooth(
    exponents: torch.Tensor, losses: Sequence[float], window: int = SMOOTHING
) -> tuple[torch.Tensor, torch.Tensor]:
    """The moving average of each `window` consecutive losses, placed at the exponent in the middle of them."""
    window = max(1, min(window, len(losses)))  # a sweep shorter than the window still gets one point
    smoothed = F.avg_pool1d(torch.tensor(losses)[None, None], window, stride=1)[0, 0]
    start = window // 2
    return exponents[start : start + len(smoothed)], smoothed


def suggest(exponents: torch.Tensor, losses: Sequence[float], window: int = SMOOTHING) -> float:
    """The lr at the bottom of the smoothed curve, divided by 10^0.5: safely before the loss blows up."""
    centres, smoothed = smooth(exponents, losses, window)
    return 10 ** (float(centres[smoothed.argmin()]) - 0.5)


def run_lr_find(cfg: DictConfig, datamodule: NamesDataModule, model: LayerNet, logger: object) -> float:
    """mode=lr_find with the configured optimizer: lr_find.png (also to TensorBoard) and the suggested lr."""
    from charmlp.training.plots import lr_find_figure, save_figure

    steps = int(cfg.lr_find_steps)
    if steps < 1:
        raise CharmlpError(f"lr_find_steps must be at least 1, got {steps}")
    exponents = torch.linspace(-3, 0, steps)
    optimizer = instantiate_group("optimizer", cfg.optimizer, params=model.parameters())
    losses = lr_sweep(model, optimizer, datamodule, exponents)
    if not math.isfinite(losses[-1]):  # lr_sweep stopped there
        log.warning(
            "lr_find: the loss is not finite at lr %.3g; the sweep stops there", 10 ** float(exponents[len(losses) - 1])
        )
        losses.pop()
        if not losses:
            raise CharmlpError("lr_find: the loss is not finite from the first update on; nothing to plot")
    exponents = exponents[: len(losses)]
    lr = suggest(exponents, losses)
    centres, smoothed = smooth(exponents, losses)
    fig = lr_find_figure(exponents.tolist(), losses, centres.tolist(), smoothed.tolist(), lr)
    image = save_figure(fig, str(Path(cfg.paths.output_dir) / "lr_find.png"))
    if hasattr(logger, "experiment"):
        logger.experiment.add_image("lr_find", image, dataformats="HWC")
        logger.experiment.flush()
    log.info("lr_find: loss is lowest near lr %.3g; suggested optimizer.lr=%.3g", lr * 10**0.5, lr)
    print(f"suggested optimizer.lr={lr:.3g}  (plot: {Path(cfg.paths.output_dir) / 'lr_find.png'})")
    return lr
