"""Where an Optuna sweep's study lives: its storage and file lock, its sampler, and the trials a dead sweep left.

The study lives in Optuna's journal file `<sweep dir>/optuna.journal` unless `storage` names another (an RDB URL
such as sqlite:///study.db, or a file path for another journal). A journal file is an append-only log with its
own file lock: safe for several processes (two sweeps on one study), readable after a kill -9 (a torn last line is
skipped), on NFS too, where SQLite's locking is not to be trusted.

Each trial records the sweep process that asked for it (`this_process`). Trials a dead sweep of this machine left
running are counted if their run had written its metrics.json (`finished_outcome`), else marked failed and queued
again with the same values.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from charmlp.rundir import record
from charmlp.sweep.slot import Outcome

log = logging.getLogger("charmlp")


class StudyStore:
    """A study's storage (a journal file, or an RDB URL), the lock around it, and the recovery of dead trials."""

    def __init__(self, study_name: str, storage: str | None, sweep_dir: Path) -> None:
        self.study_name, self.storage = study_name, storage
        self.journal = Path(storage) if storage and "://" not in storage else None
        if not storage:
            self.journal = sweep_dir / "optuna.journal"

    @property
    def where(self) -> Path | str | None:
        """The journal's path or the RDB URL, as the log and the dashboard's command line show it."""
        return self.journal or self.storage

    def open(self) -> Any:
        """The Optuna storage: a JournalStorage on the journal file (its folder made), or the RDB URL as it is."""
        if self.journal is None:
            return self.storage
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        self.journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def sampler(self, configured: Any, storage: Any) -> Any:
        """The configured sampler, its seed moved on by the trials the study already has: a continued sweep must
        not draw the same random points again (the seed alone would replay its first run's sequence)."""
        import optuna

        if not callable(configured) or not isinstance(configured, functools.partial):
            return configured
        seed = configured.keywords.get("seed")
        if seed is None:
            return configured()
        try:
            done = len(optuna.load_study(study_name=self.study_name, storage=storage).get_trials(deepcopy=False))
        except KeyError:  # a new study
            done = 0
        return configured(seed=int(seed) + done)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Across processes sharing a journal: one at a time counts the trials and asks for the next."""
        if self.journal is None:  # an RDB: its own transactions, and no file to lock
            yield
            return
        with open(self.journal, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def recover(self, study: Any, tell: Callable[[Any, Outcome], None]) -> None:
        """Trials left running by a sweep process of this machine that is gone: counted if their run had written
        its metrics.json (the sweep died before the tell; `tell` gets their outcome), else failed and queued again
        with the same values. Under the lock: the caller holds it."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("sweep", {})
            if owner.get("host") != socket.gethostname() or _alive(owner.get("pid"), owner.get("started")):
                continue  # another machine's, or a live sweep's: not ours to judge
            run_dir = trial.user_attrs.get("run_dir")
            finished = finished_outcome(run_dir)
            if finished is not None:  # the sweep died before the tell
                log.info("trial %d had ended before the sweep stopped: counted", trial.number)
                tell(trial, finished)
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            self.queue_again(study, trial.number, trial.params, run_dir)

    def queue_again(self, study: Any, number: int, params: dict[str, Any], run_dir: str | None) -> None:
        """An interrupted trial (already told failed) as a new trial with its values; its run records why."""
        study.enqueue_trial(params, user_attrs={"retry_of": number})
        log.warning("trial %d was interrupted; it runs again as a new trial with the same values", number)
        if run_dir and Path(run_dir).is_dir():
            record.record_failure(
                Path(run_dir), "interrupted: the sweep stopped while it ran; run again as a new trial"
            )


def finished_outcome(run_dir: str | None) -> Outcome | None:
    """How a trial ended by its run directory, when its run got to its end (a metrics.json with val/loss and no
    error): complete, or pruned at its update; None when it had not (or left no run directory)."""
    ended = record.ending(run_dir)
    if ended is None:
        return None
    if ended.pruned_at is not None:
        return Outcome("pruned", ended.val_loss, ended.pruned_at)
    return Outcome("complete", ended.val_loss)


def this_process() -> dict[str, Any]:
    """The owner a trial records (its `sweep` attribute): this machine, this process and when it started."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}


def _start_time(pid: int) -> str | None:
    """When a process started (Linux: field 22 of /proc/PID/stat), so a reused pid is not taken for the old one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None, started: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or _start_time(pid) in (None, started)
