"""The work of hydra/launcher=slurm (the plugin class is hydra_plugins.charmlp_slurm): hydra-submitit-launcher's
Slurm launcher, with what a real cluster needed.

- A DDP job's tasks (srun starts `tasks_per_node` of them) all run the Hydra job; tasks other than rank 0 write no
  files into the run directory (no .hydra/, no train.log: their log goes to submitit's per-task .err file).
- Waiting for the jobs works on clusters without accounting storage: submitit asks `sacct`, which fails there on
  every poll (and a job that ended without a result would be waited for forever); then `squeue` is asked instead,
  and a job it no longer lists has ended.
- A job that ends without a result (cancelled, out of time or memory, its node lost) is one failed row of the
  sweep's summary instead of an exception that ends the sweep.
- The Optuna sweeper's slots submit their trials through it (`run_trial_job`, at the end).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf, open_dict
from submitit.core.utils import FailedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from charmlp.rundir import record, trial

log = logging.getLogger(__name__)


class JobLost(Exception):
    """A Slurm job ended without a result (cancelled, out of time or memory, its node lost)."""


# squeue's states of a job that is over (any other state: it may still run)
ENDED = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
)


class QueueWatcher(SlurmInfoWatcher):
    """Job states from `squeue`, for a cluster without accounting (where `sacct` fails): a job that squeue no
    longer lists has ended (it lists finished jobs, with their end state, for MinJobAge: 300 s by default)."""

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--noheader", "--array", "--me", "--states=all", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        info = {}
        for line in text.splitlines():
            job_id, state, nodes = (line.strip().split("|") + ["", ""])[:3]
            if state not in ENDED:  # CONFIGURING, SUSPENDED, REQUEUE_HOLD, ...: not over; submitit knows RUNNING
                state = "PENDING" if state.startswith(("PENDING", "REQUEUE")) else "RUNNING"
            info[job_id] = {"JobID": job_id, "State": state, "NodeList": nodes}
        for job_id in self._registered - self._finished - info.keys():
            info[job_id] = {"JobID": job_id, "State": "ENDED", "NodeList": ""}  # any end: submitit reads its result
        return info


def has_accounting() -> bool:
    """Whether `sacct` answers on this cluster (it needs accounting storage, slurmdbd)."""
    try:
        return subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def launch(
    launcher: SubmititSlurmLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> Sequence[JobReturn]:
    """hydra-submitit-launcher's launch (one array job, one task per sweep point), with the waiting above."""
    assert launcher.config is not None
    executor = _executor(launcher)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
    job_params = []
    for num, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params))
    log.info("Slurm jobs %s", " ".join(job.job_id for job in jobs))
    returns = []
    with _watching():
        for job, (overrides, _, num, _, _) in zip(jobs, job_params):
            job.wait()  # its result file, or Slurm saying it ended
            try:
                returns.append(_result(job))
            except (JobLost, FailedJobError) as err:  # the sweep goes on without it
                returns.append(failed(launcher, overrides, num, str(err).strip().splitlines()[0]))
    return returns


def _executor(launcher: SubmititSlurmLauncher) -> Any:
    """submitit's Slurm executor with the launcher's parameters, as hydra-submitit-launcher builds it."""
    import submitit

    params = dict(launcher.params)
    executor = submitit.AutoExecutor(
        cluster=launcher._EXECUTOR,
        folder=params.pop("submitit_folder"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in queue_keys else f"slurm_{k}": v for k, v in params.items()})
    return executor


@contextmanager
def _watching() -> Iterator[None]:
    """Job states from squeue while waiting, where the cluster has no accounting (for every job and every task of
    a DDP job, each a submitit job)."""
    sacct_watcher = SlurmJob.watcher
    if not has_accounting():
        SlurmJob.watcher = QueueWatcher(delay_s=5)
    try:
        yield
    finally:
        SlurmJob.watcher = sacct_watcher


def _result(job: Any, grace_s: float = 10) -> JobReturn:
    """Rank 0's result of a job that has ended; JobLost when a task left none within `grace_s` (a shared file system
    may show the file a little late), FailedJobError when the job failed outside the Hydra job."""
    tasks = [job.task(i) for i in range(job.num_tasks)]
    end = time.monotonic() + grace_s
    while not all(task.paths.result_pickle.exists() for task in tasks):
        if time.monotonic() > end:
            state = job.watcher.get_state(job.job_id, mode="cache")
            raise JobLost(f"Slurm job {job.job_id} ended without a result ({state})")
        time.sleep(0.5)
    return job.results()[0]


def failed(launcher: SubmititSlurmLauncher, overrides: list[str], num: int, message: str) -> JobReturn:
    """A job that ended without a result: metrics.json in its run directory says so (for the summary)."""
    log.error("%s; its logs: %s", message, launcher.params["submitit_folder"])
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config.hydra.job):
        config.hydra.job.num = num
    run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record.record_failure(run_dir, message)
    return JobReturn(overrides=overrides, working_dir=str(run_dir), status=JobStatus.COMPLETED, _return_value=math.inf)


# ---- Optuna trials as Slurm jobs -----------------------------------------------------------------------------------
# The Optuna sweeper's slots stay on the submitting machine and submit one Slurm job per trial. The trial's val/loss
# reports and the sweeper's verdicts travel through two files in <sweep dir>/.submitit/trial_N/ (trial_<study>-N in a
# study other than the default; the sweep directory is on a file system the nodes share): the job appends a report
# and waits for the verdict line the slot appends.


class ReportingJob:
    """What a trial's Slurm job runs: the launcher's job, with rank 0 reporting val/loss to the sweep."""

    def __init__(self, launcher: SubmititSlurmLauncher, channel: str) -> None:
        self.launcher, self.channel = launcher, channel

    def __call__(self, *args: Any) -> JobReturn:
        from charmlp.cluster import slurm

        if slurm.global_rank() != 0:
            return self.launcher(*args)
        with trial.reporting_to(FileReporter(Path(self.channel))):
            return self.launcher(*args)

    def checkpoint(self, *args: Any) -> Any:
        """submitit's requeue at the time limit outside training: the same call again (training resumes itself)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args)


class FileReporter:
    """The trial's side: append `[update, val/loss]` to reports.jsonl, wait for its line in verdicts."""

    def __init__(self, channel: Path, patience_s: float = 600) -> None:
        self.channel, self.patience_s = channel, patience_s

    def __call__(self, update: int, val_loss: float) -> bool:
        with open(self.channel / "reports.jsonl", "a") as f:
            f.write(json.dumps([update, val_loss]) + "\n")
        sent = len(_lines(self.channel / "reports.jsonl"))  # a requeued job goes on counting
        end = time.monotonic() + self.patience_s
        while True:
            verdicts = _lines(self.channel / "verdicts")
            if len(verdicts) >= sent:
                return verdicts[sent - 1] == "prune"
            if time.monotonic() >= end:
                break
            time.sleep(0.1)
        if self.patience_s:
            log.warning("no verdict from the sweep in %.0f s: training on without its verdicts", self.patience_s)
            self.patience_s = 0  # the sweep is gone (or stuck): do not wait at every validation
        return False


class ReportRelay:
    """The slot's side: each new report goes to the sweeper (`report`), its verdict back into verdicts."""

    def __init__(self, channel: Path, report: Callable[[int, float], bool]) -> None:
        self.channel, self.report, self.answered = channel, report, 0
        channel.mkdir(parents=True, exist_ok=True)
        for name in ("reports.jsonl", "verdicts"):
            (channel / name).touch()

    def answer(self) -> None:
        for line in _lines(self.channel / "reports.jsonl")[self.answered :]:
            update, val_loss = json.loads(line)
            verdict = "prune" if self.report(int(update), float(val_loss)) else "go"
            with open(self.channel / "verdicts", "a") as f:
                f.write(verdict + "\n")
            self.answered += 1


def _lines(path: Path) -> list[str]:
    """The complete (newline-ended) lines of a file another process appends to."""
    try:
        return path.read_text().split("\n")[:-1]
    except OSError:
        return []


def run_trial_job(
    launcher: SubmititSlurmLauncher,
    overrides: list[str],
    number: int,
    report: Callable[[int, float], bool],
    name: str | None = None,
) -> JobReturn:
    """One Optuna trial as a Slurm job, its reports relayed through `trial_<name>` (name: the trial's number in the
    default study, `<study_name>-<number>` in another); Ctrl-C or SIGTERM to the slot cancels the job (which stops
    after its step with last.ckpt) and raises KeyboardInterrupt."""
    import signal

    channel = Path(str(launcher.params["submitit_folder"])).parent / f"trial_{number if name is None else name}"
    relay = ReportRelay(channel, report)
    job = _executor(launcher).submit(
        ReportingJob(launcher, str(channel)),
        list(overrides),
        "hydra.sweep.dir",
        number,
        f"job_id_for_{number}",
        Singleton.get_state(),
    )
    log.info("trial %d: Slurm job %s", number, job.job_id)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _watching():
            while not job.done():
                relay.answer()
                time.sleep(0.2)
            relay.answer()
            return _result(job)
    except BaseException:  # Ctrl-C, SIGTERM, the sweeper gone: no orphan trains on
        if not job.done():
            job.cancel(check=False)  # SIGTERM: the run stops after its step, with last.ckpt
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
