"""run(cfg): build the data, model, callbacks, logger and trainer from the config; fit; test; record (report.py
then writes the pictures and the table)."""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import threadpoolctl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from charmlp.cluster import ddp, slurm
from charmlp.errors import CharmlpError, Pruned, Requeued, TrainingInterrupted
from charmlp.model.layers import predicts_every_step
from charmlp.model.network import LayerNet
from charmlp.rundir import record
from charmlp.rundir.checkpoints import resolve_ckpt_path
from charmlp.training import pruning
from charmlp.training.callbacks import GracefulStop
from charmlp.training.checkpoint_io import AtomicCheckpointIO
from charmlp.training.config import instantiate_group, to_plain
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.evaluate import split_loss, unseen_metrics
from charmlp.training.module import CharLMModule
from charmlp.training.report import print_table, report
from charmlp.training.resume import check_resume

log = logging.getLogger("charmlp")
# Lightning's package logger prints to the console itself; under Hydra the root logger already does
if logging.getLogger().hasHandlers():
    logging.getLogger("lightning").handlers.clear()
warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # raised inside Lightning, not actionable here
# on any machine with Slurm's tools, a run outside a job: what it means is in the README (Running on a Slurm cluster)
warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")
# adverts and hints that do not apply here (charmlp logs to TensorBoard; srun is only a hint when it is on PATH)
NOISE = ("💡 Tip:", "The `srun` command is available on your system but is not used")


def _not_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(NOISE)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_noise)
logging.getLogger("lightning.fabric.utilities.rank_zero").addFilter(_not_noise)


def run(cfg: DictConfig) -> float:
    """Train one model as the config says; return the best val/loss (what a sweeper minimises)."""
    started = time.perf_counter()
    set_threads(torch_threads(int(cfg.threads)))
    log.info("torch threads: %d", torch.get_num_threads())
    run_dir = Path(cfg.paths.output_dir)
    slurm.warning_outside_training()
    L.seed_everything(cfg.seed, verbose=False)

    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule)
    if cfg.mode == "lr_find":
        from charmlp.training.lr_find import run_lr_find

        return run_lr_find(cfg, datamodule, module.net, instantiate(cfg.logger) if cfg.get("logger") else None)
    if cfg.mode != "train":
        raise CharmlpError(f"mode must be train or lr_find, got {cfg.mode!r}")
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] + pruning.callbacks()  # the latter: sweep trials
    logger = instantiate(cfg.logger) if cfg.get("logger") else False  # logger=null: no TensorBoard
    ddp.prepare_job()  # before the Trainer, which decides whether to launch child ranks
    trainer = build_trainer(cfg, callbacks, logger)
    log.info("%s", describe(module.net))
    warn_slow_precision(trainer)

    ckpt_path = slurm.resume_checkpoint(run_dir)  # a requeued Slurm job: its own last.ckpt, its own config
    if ckpt_path is None and cfg.ckpt_path is not None:
        ckpt_path = resolve_ckpt_path(cfg.ckpt_path)
        check_resume(cfg, ckpt_path)  # done once per file and process (train.py's RunPlacement checked it already)
        log.info("resuming from %s", ckpt_path)
    stop = next(c for c in callbacks if isinstance(c, GracefulStop))
    fit_started = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SystemExit:  # Lightning's answer to a second Ctrl-C (KeyboardInterrupt inside fit): exit(1)
        if stop.received is None:
            raise
        raise TrainingInterrupted(
            f"{signal.Signals(stop.received).name} twice: stopped at once, in update {trainer.global_step}; "
            f"{run_dir / 'checkpoints' / 'last.ckpt'} holds the last validation. {slurm.resume_hint(run_dir)}"
        ) from None
    fit_seconds = time.perf_counter() - fit_started
    ddp.after_fit(trainer)
    checkpoint = next(c for c in callbacks if isinstance(c, ModelCheckpoint))
    if stop.signal_name is not None:  # what every rank agreed on, so every rank stops here
        last = Path(checkpoint.dirpath) / "last.ckpt"
        if stop.requeue:  # Slurm's warning: back in the queue, to resume from last.ckpt
            slurm.requeue()
            raise Requeued(f"{stop.signal_name} after update {trainer.global_step}: requeued; {last} holds it")
        raise TrainingInterrupted(
            f"{stop.signal_name} after update {trainer.global_step}; {last} holds it. {slurm.resume_hint(last)}"
        )
    pruned_at = next((c.pruned_at for c in callbacks if isinstance(c, pruning.TrialReport)), None)
    if pruned_at is not None:  # no test and no report: the sweep gave up on this run
        raise pruned(trainer, float(checkpoint.best_model_score), fit_seconds, run_dir)
    if checkpoint.best_model_score is None:
        raise CharmlpError(
            f"nothing was trained: the run is already at update {trainer.global_step}; raise trainer.max_steps"
        )
    # the best checkpoint by its path: "best" warns when there are two ModelCheckpoints (best.ckpt and last.ckpt)
    trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, verbose=False)  # collective
    if not trainer.is_global_zero:  # under DDP only rank 0 reports and writes files
        return float(checkpoint.best_model_score)
    metrics = {
        "train/loss": split_loss(module.net, datamodule.split_batches("train")),
        "val/loss": float(checkpoint.best_model_score),
        "test/loss": float(trainer.callback_metrics["test/loss"]),
    }
    metrics["train_val_gap"] = metrics["val/loss"] - metrics["train/loss"]
    metrics.update(unseen_metrics(module.net, datamodule))  # on the best checkpoint's weights, as the test
    metrics.update(
        steps=trainer.global_step,  # of the whole run, a resumed one included
        seconds=round(module.seconds_before + fit_seconds, 2),
        updates_per_second=round(module.updates_done / max(fit_seconds, 1e-9), 1),  # this process's
    )
    record.write(run_dir, metrics)
    report(module, datamodule, logger, cfg, metrics, run_dir)
    print_table(metrics, run_dir, module.updates_done, fit_seconds, time.perf_counter() - started)
    return metrics["val/loss"]


def pruned(trainer: L.Trainer, best_val: float, fit_seconds: float, run_dir: Path) -> Pruned:
    """metrics.json of a pruned run says so (the update and its best val/loss), and the log says why it ends."""
    update = trainer.global_step
    log.info("pruned by the sweep at update %d (best val/loss %.4f): no test, no plots", update, best_val)
    if trainer.is_global_zero:
        record.write_pruned(run_dir, update, best_val, fit_seconds)
    return Pruned(update, best_val)


def torch_threads(wanted: int) -> int:
    """`threads`, capped at this job's share of the cores when a launcher (joblib) or the Optuna sweeper runs several
    jobs at once."""
    if wanted < 1:
        raise CharmlpError(f"threads must be at least 1, got {wanted}")
    if not HydraConfig.initialized() or slurm.in_job():  # a Slurm job has the cores it asked for (cpus = threads)
        return wanted
    hydra = HydraConfig.get()
    parallel_jobs = None
    for plugin, name in ((hydra.launcher, "joblib"), (hydra.sweeper, "charmlp_optuna")):
        if name in str(plugin.get("_target_", "")):
            parallel_jobs = plugin.get("n_jobs")
    if not parallel_jobs:
        return wanted
    cores = os.cpu_count() or 1
    parallel_jobs = cores if parallel_jobs < 0 else parallel_jobs  # joblib's -1: one job per core
    return max(1, min(wanted, cores // parallel_jobs))


def set_threads(n: int) -> None:
    """n threads for torch and for numpy's BLAS (the hand-written update's products): OpenBLAS starts one per core,
    and on a machine whose other cores are busy a small product then waits for them (2x slower on 2 cores)."""
    torch.set_num_threads(n)
    threadpoolctl.threadpool_limits(n, user_api="blas")


def build_datamodule(cfg: DictConfig) -> NamesDataModule:
    """The data group's datamodule (conf/data/*.yaml name its class), drawing its minibatches from the run's seed."""
    datamodule = instantiate_group("data", cfg.data, seed=cfg.seed)
    datamodule.setup("fit")  # the vocabulary size decides the model's shape
    return datamodule


def build_module(cfg: DictConfig, datamodule: NamesDataModule) -> CharLMModule:
    model_args = {**to_plain(cfg.model), "vocab_size": len(datamodule.vocab), "block_size": datamodule.block_size}
    module = CharLMModule(
        model=model_args,
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        vocab=datamodule.vocab.to_dict(),
        updates_per_step=cfg.updates_per_step,
        fused_sgd=cfg.fused_sgd,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm") or "norm",
        diagnostics=to_plain(cfg.diagnostics) if cfg.get("diagnostics") else None,  # ~diagnostics: off
    )
    sequence = predicts_every_step(module.net.stack, datamodule.block_size)
    if sequence != (datamodule.mode == "words"):
        raise CharmlpError(
            f"this model predicts {'at every position of a word' if sequence else 'one character per window'}: "
            f"it trains with data.mode={'words' if sequence else 'windows'}, not data.mode={datamodule.mode}"
        )
    return module


def build_trainer(cfg: DictConfig, callbacks: list, logger: Any) -> L.Trainer:
    """The configured Trainer, with intervals given in updates turned into Lightning steps."""
    per_step = int(cfg.updates_per_step)  # at least 1: the module, built first, checks it
    max_steps, val_every = int(cfg.trainer.max_steps), int(cfg.trainer.val_check_interval)
    if max_steps < 1:
        raise CharmlpError(f"trainer.max_steps must be at least 1 update, got {max_steps}")
    if val_every < 1 or val_every % per_step:
        raise CharmlpError(
            f"trainer.val_check_interval ({val_every} updates) must be a positive multiple of "
            f"updates_per_step ({per_step})"
        )
    try:
        return instantiate(
            cfg.trainer,
            val_check_interval=val_every // per_step,
            gradient_clip_val=None,  # the module clips (Lightning refuses to under manual optimization)
            gradient_clip_algorithm=None,
            callbacks=callbacks,
            logger=logger,
            plugins=[AtomicCheckpointIO(), *slurm.cluster_plugins()],
            default_root_dir=cfg.paths.output_dir,
            enable_checkpointing=True,
        )
    except InstantiationException as err:  # e.g. trainer=gpu without a GPU, an unknown precision
        cause = err.__cause__ or err
        raise CharmlpError(
            f"trainer: {str(cause).strip().splitlines()[0]} (trainer=default takes what this machine has)"
        ) from None


def describe(net: LayerNet) -> str:
    """One line for the log: the parameter count and each parameter's shape."""
    shapes = ", ".join(f"{name} {'x'.join(map(str, p.shape))}" for name, p in net.named_parameters())
    return f"{type(net).__name__}: {sum(p.numel() for p in net.parameters()):,} parameters ({shapes})"


def warn_slow_precision(trainer: L.Trainer) -> None:
    """bf16-mixed on a CPU is emulated: say so, since nothing else would."""
    if "mixed" in str(trainer.precision) and trainer.strategy.root_device.type == "cpu":
        log.warning(
            "trainer.precision=%s on the CPU runs about 10x slower than 32-true and gains nothing at this size; "
            "it is for GPUs",
            trainer.precision,
        )
