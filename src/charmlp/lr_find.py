"""The seed's learning-rate sweep: one update at each of lrs = 10^linspace(-3, 0, 1000), loss against lr."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from charmlp.datamodule import NamesDataModule
from charmlp.errors import CharmlpError
from charmlp.mlp import MLP

log = logging.getLogger("charmlp")


def lr_sweep(model: MLP, datamodule: NamesDataModule, exponents: torch.Tensor) -> list[float]:
    """Plain SGD from the model's init, the k-th update with lr 10^exponents[k]; the loss before each."""
    if model.dropout:
        raise CharmlpError("mode=lr_find makes plain SGD updates without dropout; add model.dropout=0")
    sampler = next(iter(datamodule.train_dataloader()))
    xs, ys = sampler.draw(len(exponents))
    return [float(model.sgd_step_(x, y, lr=10 ** float(e))) for x, y, e in zip(xs, ys, exponents)]


def suggest(exponents: torch.Tensor, losses: list[float], window: int = 50) -> float:
    """The lr at the bottom of the smoothed curve, divided by 10^0.5: safely before the loss blows up."""
    smoothed = torch.nn.functional.avg_pool1d(torch.tensor(losses)[None, None], window, stride=1)[0, 0]
    best = int(smoothed.argmin()) + window // 2
    return 10 ** (float(exponents[best]) - 0.5)


def run_lr_find(cfg: DictConfig, datamodule: NamesDataModule, model: MLP, logger: object) -> float:
    from charmlp.plots import lr_find_figure, save_figure

    exponents = torch.linspace(-3, 0, int(cfg.get("lr_find_steps", 1000)))
    losses = lr_sweep(model, datamodule, exponents)
    lr = suggest(exponents, losses)
    fig = lr_find_figure(exponents.tolist(), losses, lr)
    save_figure(fig, str(Path(cfg.paths.output_dir) / "lr_find.png"))
    if hasattr(logger, "experiment"):
        logger.experiment.add_figure("lr_find", fig)
        logger.experiment.flush()
    log.info("lr_find: loss is lowest near lr %.3g; suggested optimizer.lr=%.3g", lr * 10**0.5, lr)
    print(f"suggested optimizer.lr={lr:.3g}  (plot: {Path(cfg.paths.output_dir) / 'lr_find.png'})")
    return lr
