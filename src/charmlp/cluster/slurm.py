"""A training run inside a Slurm job: ranks from srun, a checkpoint and a requeue on the warning signal, and the
resume when Slurm starts the job again.

Slurm warns a job before its time limit with the signal of `sbatch --signal` (submitit asks for USR2, 120 s ahead;
`scancel --signal=USR1` is the other common one). Lightning's own auto-requeue (SLURMEnvironment(auto_requeue=True))
saves `hpc_ckpt_N.ckpt` wherever the signal lands, possibly inside a Lightning step whose minibatches are already
drawn, so its resume is not exact; and under DDP each rank's handler saves through the trainer (a barrier) from
inside the signal handler, wherever that rank is, which hung a two-task job. Here the signal goes to charmlp's
GracefulStop like Ctrl-C: all ranks stop after the same step, last.ckpt is written, rank 0 alone requeues the job,
and the job, started again in the same run directory, resumes from that last.ckpt. A job killed without warning
(`scontrol requeue`, a node lost, SIGTERM at the time limit) resumes from its last.ckpt the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from charmlp.errors import CharmlpError

log = logging.getLogger("charmlp")

REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # what a Slurm job gets ahead of its time limit or preemption
LAUNCHER = "hydra_plugins.charmlp_slurm.slurm_launcher.SlurmLauncher"  # hydra/launcher=slurm
# a DDP rank other than 0 (started by Lightning or by srun) runs its job logging to its stderr only, writing no files
QUIET_RANK = [
    "hydra.output_subdir=null",
    "hydra.job_logging.root.handlers=[console]",
    "~hydra.job_logging.handlers.file",
]


def in_job() -> bool:
    """Whether this process runs in a Slurm job, as Lightning's SLURMEnvironment decides it (SLURM_NTASKS set and a
    job name other than bash or interactive: srun's tasks, and a batch script's own step)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def cluster_plugins() -> list:
    """Lightning's Slurm environment (ranks, world size and master address from SLURM_* variables) without its
    auto-requeue: GracefulStop handles the signal and `requeue` below requeues."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if in_job() else []


def global_rank() -> int:
    """This task's rank in its job (0 outside Slurm): Slurm numbers the tasks of a step before Lightning starts."""
    return int(os.environ.get("SLURM_PROCID", "0"))


def restarts() -> int:
    """How many times Slurm has started this job before (requeues)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def resume_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint a requeued job continues from: its own run directory's last.ckpt, when Slurm has started it
    before and it got as far as one. Anything else (a first start, or no checkpoint yet) starts as configured."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if restarts() < 1:
        return None
    if not last.is_file():
        log.warning(
            "Slurm started job %s again, but %s has no checkpoints/last.ckpt: training from the start (a requeued "
            "job resumes only when it runs in the same directory: a fixed hydra.run.dir, or a sweep's job)",
            os.environ.get("SLURM_JOB_ID"),
            run_dir,
        )
        return None
    log.info("Slurm job %s, start %d: resuming from %s", os.environ.get("SLURM_JOB_ID"), restarts() + 1, last)
    return str(last)


def resume_hint(last: Path) -> str:
    """How a stopped run continues: in a Slurm job by requeueing it, else by naming its checkpoint."""
    job = os.environ.get("SLURM_JOB_ID")
    if job is not None and in_job():
        return f"Slurm job {job} resumes from it when requeued (scontrol requeue {job})"
    return f"Resume with: python train.py ckpt_path={last} (plus this run's overrides)"


def warning_outside_training() -> None:
    """USR1 outside training (data setup, test, plots) does what submitit does with its USR2 there: requeue the job,
    which then resumes from last.ckpt. Without this, USR1's default action ends the job with no requeue."""
    handler = signal.getsignal(signal.SIGUSR2)
    if callable(handler) and signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL and in_job():
        signal.signal(signal.SIGUSR1, handler)


def requeue() -> None:
    """Put this job back in Slurm's queue (rank 0 only; one `scontrol requeue` per job). Slurm then ends every task
    of the job and starts it again later, in the same run directory."""
    job = os.environ.get("SLURM_JOB_ID")
    if global_rank() != 0 or job is None:
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CharmlpError(f"could not requeue Slurm job {job}: {err}") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise CharmlpError(
            f"could not requeue Slurm job {job}: {reason[-1] if reason else f'scontrol exit {done.returncode}'} "
            "(is SLURM_CONF exported where the job was submitted, and the job requeueable?)"
        )
    log.info("requeued Slurm job %s: it resumes from last.ckpt when Slurm starts it again", job)


def configured_launcher(config: Any, hydra_context: Any, task_function: Any) -> Any:
    """The Slurm launcher when the sweep's config chooses it (the Optuna sweeper then submits its trials), else None."""
    if str(config.hydra.launcher.get("_target_", "")) != LAUNCHER:
        return None
    from hydra.core.plugins import Plugins

    return Plugins.instance().instantiate_launcher(
        hydra_context=hydra_context, task_function=task_function, config=config
    )
