"""One slot of the Optuna sweeper: a forked process that runs the trials it is sent, one after another.

Each trial is a Hydra job run in this process exactly as Hydra's basic launcher runs one (its own config, run
directory, log file and job callbacks). val/loss goes to the sweeper at every validation over the pipe, and the
sweeper's answer says whether to prune. Torch and Lightning are imported once per slot, not once per trial.
With hydra/launcher=slurm the slot submits each trial as a Slurm job instead and relays its reports
(charmlp.cluster.slurm_launcher.run_trial_job).

Signals: during training a run's GracefulStop takes Ctrl-C and SIGTERM (it stops after the step, with last.ckpt).
Outside training the slot only records them (`slot_signals`): a trial past training (test, plots) finishes and is
counted, and the slot then ends; one still setting up gets the signal passed on at its first validation, where
GracefulStop stops it. A run that ends by SystemExit or KeyboardInterrupt after the slot got a signal was
interrupted, not failed: it is queued again.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from hydra.core.utils import configure_log, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from charmlp.cluster import slurm
from charmlp.rundir import record, trial

INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C or SIGTERM (TrainingInterrupted)
DEFAULT_STUDY = "charmlp"  # its trials' folders are their numbers; another study's are <study_name>-<number>


@dataclass
class Outcome:
    """How a trial ended: state is complete, pruned, failed or interrupted."""

    state: str
    value: float | None = None  # val/loss (complete), or the best val/loss before pruning
    update: int | None = None  # where a pruned trial stopped
    reason: str = ""  # why a trial failed


class SlotSignals:
    """The first Ctrl-C or SIGTERM this slot got outside training, where its handler is in place (GracefulStop's
    replaces it during training and puts it back after)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._passed_on = False

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.record)

    def record(self, signum: int, frame: Any) -> None:
        """Only a note: the slot's default SIGTERM would kill it and throw away a trial that is writing its report."""
        self.received = self.received or signum

    def pass_on(self) -> None:
        """In training (at a validation): a signal recorded before training began goes to the run's own handler, which
        stops it after the step. Once: a second signal would make GracefulStop abort at once."""
        if self.received is not None and not self._passed_on:
            self._passed_on = True
            os.kill(os.getpid(), self.received)


slot_signals = SlotSignals()


def serve(conn: Connection, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
    """The slot's loop: receive (trial number, overrides), run the trial, send ("done", Outcome); None ends it, and
    so does a signal (after the trial it came in)."""
    _die_with_parent()
    slot_signals.install()
    on_slurm = slurm.configured_launcher(config, hydra_context, task_function)  # trials as Slurm jobs, if chosen
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the sweeper is gone
            return
        if job is None:
            return
        number, overrides = job
        outcome = run_trial(conn, hydra_context, task_function, config, number, overrides, on_slurm)
        conn.send(("done", outcome))
        if outcome.state == "interrupted" or slot_signals.received is not None:
            return


def trial_name(config: DictConfig, number: int) -> str:
    """A trial's name, its folder's with the default hydra.sweep.subdir: its number in the default study,
    `<study_name>-<number>` in another, so two studies in one sweep directory keep apart (each counts from 0)."""
    study_name = _study_name(config)
    return str(number) if study_name == DEFAULT_STUDY else f"{study_name}-{number}"


def study_subdir(config: DictConfig) -> list[str]:
    """The override that puts a trial of a study other than the default in `<study_name>-<hydra.sweep.subdir>`."""
    study_name = _study_name(config)
    if study_name == DEFAULT_STUDY:
        return []
    subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]  # as written: ${hydra.job.num}
    value = f"{study_name}-{subdir}".replace("'", "\\'")
    return [f"hydra.sweep.subdir='{value}'"]  # a hydra override: not in the job's overrides.yaml


def _study_name(config: DictConfig) -> str:
    return str(OmegaConf.select(config, "hydra.sweeper.study_name", default=DEFAULT_STUDY))


def run_trial(
    conn: Connection,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    number: int,
    overrides: list[str],
    on_slurm: Any = None,
) -> Outcome:
    """One trial as a Hydra job (as BasicLauncher.launch runs each job; or as a Slurm job through `on_slurm`, the
    Slurm launcher), reporting to the sweeper."""
    overrides = [*overrides, *study_subdir(config)]
    try:
        sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    except Exception as err:  # an override the config cannot take
        return Outcome("failed", reason=f"{type(err).__name__}: {str(err).strip().splitlines()[0]}")
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = number
        sweep_config.hydra.job.num = number
    run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    conn.send(("start", str(run_dir)))

    def report(update: int, val_loss: float) -> bool:
        slot_signals.pass_on()
        conn.send(("report", update, val_loss))
        return bool(conn.recv())

    from charmlp.errors import Pruned

    try:
        if on_slurm is not None:
            from charmlp.cluster.slurm_launcher import run_trial_job

            ret = run_trial_job(on_slurm, list(overrides), number, report, trial_name(config, number))
        else:
            with trial.reporting_to(report):
                ret = run_job(
                    hydra_context=hydra_context,
                    task_function=task_function,
                    config=sweep_config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
        if isinstance(ret._return_value, Pruned):  # not through .return_value, which logs it as an error
            return Outcome("pruned", ret._return_value.val_loss, ret._return_value.update)
        value = ret.return_value  # raises what the job raised
    except SystemExit as err:  # the job's own one-line exit: Ctrl-C (130) or an error it could not score
        if err.code == INTERRUPTED or slot_signals.received is not None:  # or Lightning's exit(1) after a Ctrl-C
            return Outcome("interrupted", reason="interrupted: the sweep was stopped while it ran")
        return _failed(run_dir, f"exited with code {err.code}")
    except KeyboardInterrupt:  # a second Ctrl-C
        return Outcome("interrupted", reason="interrupted: the sweep was stopped while it ran")
    except Exception as err:  # a bug or an unexpected library error: the trial fails, the sweep goes on
        return _failed(run_dir, f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    finally:
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # as the basic launcher does after a job
    error = record.recorded_error(run_dir)
    if error is not None:  # the job scored a user error as inf and left the reason in metrics.json
        return Outcome("failed", reason=error)
    if value is None or not math.isfinite(float(value)):
        return _failed(run_dir, f"val/loss is {value}")
    return Outcome("complete", float(value))


def _failed(run_dir: Path, reason: str) -> Outcome:
    if run_dir.is_dir():
        record.record_failure(run_dir, reason)
    return Outcome("failed", reason=reason)


def _die_with_parent() -> None:
    """Linux: the kernel kills this slot when the sweeper process dies (kill -9 included), so no orphan trains on."""
    with suppress(OSError, AttributeError):  # not Linux: the pipe's end still tells the slot at its next report
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
