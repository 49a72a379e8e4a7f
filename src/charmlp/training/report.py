"""After a run: the pictures, samples and HPARAMS entry in TensorBoard, and the end-of-run table on stderr."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, ListConfig, OmegaConf

from charmlp.sampling.generate import Network, generate
from charmlp.training.config import to_plain
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.module import CharLMModule
from charmlp.training.plots import diagnostics_figure, embedding_figure, loss_figure, save_figure

log = logging.getLogger("charmlp")


def report(
    module: CharLMModule, datamodule: NamesDataModule, logger: Any, cfg: DictConfig, metrics: dict, run_dir: Path
) -> None:
    """embedding.png, loss.png, diagnostics.png, and in TensorBoard: the images, C in the projector, samples,
    hparams."""
    labels = list(datamodule.vocab.itos)
    figures = {
        "embedding": embedding_figure(module.net.embedding, labels),
        "loss": loss_figure(module.history["train/loss"], module.history["val/loss"]),
    }
    if module.diagnostics.last is not None:  # diagnostics on, and a reading taken in this process
        figures["diagnostics"] = diagnostics_figure(module.diagnostics.last, module.history)
    images = {name: save_figure(fig, str(run_dir / f"{name}.png")) for name, fig in figures.items()}
    net = Network.from_state(
        module.hparams.model,
        {k: v.detach().cpu().float().numpy() for k, v in module.net.state_dict().items()},
        vocab_size=len(datamodule.vocab),
    )
    names = [s.name for s in generate(net, datamodule.vocab, 20, np.random.default_rng(int(cfg.seed)))]
    log.info("samples: %s", " ".join(names))
    if not isinstance(logger, TensorBoardLogger):
        return
    writer, step = logger.experiment, metrics["steps"]
    for name, image in images.items():
        writer.add_image(name, image, global_step=step, dataformats="HWC")
    writer.add_embedding(module.net.embedding.detach().cpu(), metadata=labels, tag="C", global_step=step)
    writer.add_text("samples", "  \n".join(names), global_step=step)
    log_hparams(writer, cfg, metrics)
    logger.finalize("success")


def log_hparams(writer: Any, cfg: DictConfig, metrics: dict) -> None:
    """HPARAMS tab entry tied to the val/loss, test/loss and train/loss series (no extra scalar points)."""
    from torch.utils.tensorboard.summary import hparams

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    choices = dict(hydra.runtime.choices) if hydra else {}
    overrides = list(hydra.overrides.task) if hydra else []
    exp, ssi, sei = hparams(
        knobs(cfg, choices, overrides), {k: metrics[k] for k in ("val/loss", "test/loss", "train/loss")}
    )
    for summary in (exp, ssi, sei):
        writer.file_writer.add_summary(summary)


KNOB_GROUPS = ("data", "model", "optimizer", "scheduler")
NOT_KNOBS = ("data.eval_batch_size", "model.layers", "optimizer.fused")  # speed or structure, not results
PLUMBING = ("hydra.", "paths.", "callbacks.", "logger.", "hparams_search")


def knobs(cfg: DictConfig, choices: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """What a person sets or sweeps, for HPARAMS: the experiment and the group options chosen, the data, model,
    optimizer and schedule values, max_steps, seed, and any other key the command line (or a sweep) set.
    Targets, paths and callbacks stay out: they are the same in every run and crowd the table."""
    params: dict[str, Any] = {g: choices[g] for g in ("experiment", *KNOB_GROUPS) if choices.get(g)}
    for group in KNOB_GROUPS:
        for key, value in flatten(to_plain(cfg.get(group) or {}), f"{group}.").items():
            if not key.endswith("._target_") and key not in NOT_KNOBS:
                params[key] = value
    params["trainer.max_steps"], params["seed"] = cfg.trainer.max_steps, cfg.seed
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in params and not key.startswith(PLUMBING) and "=" in override:
            value = OmegaConf.select(cfg, key, default=None)
            if not isinstance(value, (DictConfig, ListConfig)) or key in choices:
                params[key] = choices.get(key, value)
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def print_table(metrics: dict, run_dir: Path, updates: int, fit_seconds: float, seconds: float) -> None:
    """The end-of-run table on stderr: each split's loss (and on its unseen words), the gap, the time."""
    lines = [f"{'split':<6} {'loss':>7}  {'unseen':>7}  (words not in train)"]
    for name in ("train", "val", "test"):
        unseen = metrics.get(f"{name}/loss_unseen")
        extra = "" if name == "train" else f"  {_cell(unseen)}  ({metrics[f'{name}/words_unseen']:,} of "
        extra += "" if name == "train" else f"{metrics[f'{name}/words']:,} words)"
        lines.append(f"{name:<6} {metrics[f'{name}/loss']:>7.4f}{extra}")
    lines.append(f"{'gap':<6} {metrics['train_val_gap']:>7.4f}  (val - train)")
    whole = f" (the whole run: {metrics['steps']} updates, {metrics['seconds']:.1f} s)"
    run = whole if updates != metrics["steps"] else ""
    lines.append(f"{updates} updates in {fit_seconds:.1f} s of training{run}, {seconds:.1f} s in all")
    lines.append(f"run directory: {run_dir}")
    print("\n".join(lines), file=sys.stderr)


def _cell(value: float | None) -> str:
    return f"{value:>7.4f}" if value is not None else f"{'-':>7}"
