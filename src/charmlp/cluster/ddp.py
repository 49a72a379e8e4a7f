"""DDP under Hydra: each child rank runs its own job, every job starts fresh ranks, all ranks end with equal weights.

Lightning starts ranks > 0 by running train.py again with rank 0's command line. In a multirun that line is the
whole sweep, so each child would run every job; instead rank 0's job exports its overrides and directory, and a
child rank runs exactly that job. Lightning also leaves a job's process group and its launcher's environment
variables in rank 0's process, where the next job of a multirun would take them as its own.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
from typing import TYPE_CHECKING

from charmlp.errors import CharmlpError

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("charmlp")
JOB_ENV = "CHARMLP_DDP_JOB"  # the job a child rank runs: {"overrides": [...], "dir": "..."}
# what Lightning's launcher writes into rank 0's environment; LOCAL_RANK left there makes the next Trainer take its
# processes as started by someone else, so it launches no child ranks and waits for them forever
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

_env_before: dict[str, str | None] = {}  # LAUNCHER_ENV as it was before this process's last DDP job
_children: list[subprocess.Popen] = []  # child ranks that rank 0 waits for itself


def child_rank_args(argv: list[str]) -> list[str]:
    """The arguments a child rank runs with: the job its rank 0 exported (no files of its own), else `argv`."""
    job = os.environ.get(JOB_ENV)
    if os.environ.get("LOCAL_RANK", "0") == "0" or not job:
        return argv
    job = json.loads(job)
    return [*job["overrides"], f'hydra.run.dir="{job["dir"]}"']


def prepare_job() -> None:
    """Before a job builds its Trainer: end what a previous DDP job left in this process, and export this job."""
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig

    if dist.is_available() and dist.is_initialized():  # a previous job of this multirun ran DDP here, now done
        dist.destroy_process_group()  # stale: its peers have exited
        _wait_for_children()
        for key, value in _env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _env_before.update({key: os.environ.get(key) for key in LAUNCHER_ENV})
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        job = {"overrides": list(hydra_cfg.overrides.task), "dir": hydra_cfg.runtime.output_dir}
        os.environ[JOB_ENV] = json.dumps(job)  # child ranks inherit rank 0's environment


def after_fit(trainer: L.Trainer) -> None:
    """On every rank after trainer.fit under DDP: rank 0 takes over its child ranks, then all compare weights."""
    if trainer.world_size < 2:
        return
    _adopt_children(trainer)
    check_weights_equal(trainer)


def check_weights_equal(trainer: L.Trainer) -> None:
    """All ranks must end with the same weights and batch-norm running statistics (a missing sync shows here):
    log it on rank 0, or raise."""
    import torch

    module = trainer.lightning_module
    named = list(module.named_parameters()) + list(module.named_buffers())
    sums = torch.stack([p.detach().double().sum() for _, p in named])  # float64: moves with 1 ulp of any weight
    highest = trainer.strategy.reduce(sums.clone(), reduce_op="max")  # reduce works in place
    lowest = trainer.strategy.reduce(sums.clone(), reduce_op="min")
    differ = [name for (name, _), hi, lo in zip(named, highest.tolist(), lowest.tolist()) if hi != lo]
    if differ:
        raise CharmlpError(f"DDP ranks ended with different weights in {', '.join(differ)}: gradients were not synced")
    if trainer.is_global_zero:
        stats = " (running statistics too)" if any(True for _ in module.buffers()) else ""
        log.info("weights equal on %d ranks%s", trainer.world_size, stats)


def _adopt_children(trainer: L.Trainer) -> None:
    """Rank 0 waits for its child ranks itself from here on, taking them off Lightning's watch.

    Lightning's observer thread SIGKILLs rank 0 when a child exits with a nonzero code: right for a crash in
    training, wrong for a child that stops on a signal (exit 130) or fails alongside rank 0, which could be
    killed before it reports. The children cannot finish before rank 0 is past this (the weights check after it
    is collective); rank 0 reaps them at its next job or on exit.
    """
    procs = getattr(trainer.strategy.launcher, "procs", None)  # the subprocess launcher's children (rank 0 only)
    if procs:
        _children.extend(procs)
        procs.clear()  # the same list the observer polls


def _wait_for_children(timeout: float = 60) -> None:
    for proc in _children:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("DDP rank with pid %d still running %.0f s after its job: killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()
    _children.clear()


atexit.register(_wait_for_children)  # registered before Lightning's NCCL group destroy, so it runs after it
