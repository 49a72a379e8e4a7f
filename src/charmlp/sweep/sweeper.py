"""charmlp's Optuna sweeper: ask-and-tell over slots that never idle, pruning, and a study that outlives the sweep.

The sweeper process owns the study: it asks for a trial whenever a slot is free, answers each slot's val/loss
reports with the pruner's verdict, and tells the outcome. The slots are forked worker processes
(`sweep_worker.serve`), not Hydra's launcher: a launcher takes a batch of jobs and returns when the slowest has
ended, so a slot whose trial was pruned would wait for the others; here it takes the next trial at once.

The study lives in Optuna's journal file `<sweep dir>/optuna.journal` unless `storage` names another (an RDB URL
such as sqlite:///study.db, or a file path for another journal). A journal file is an append-only log with its
own file lock: safe for several processes (two sweeps on one study), readable after a kill -9 (a torn last line is
skipped), on NFS too, where SQLite's locking is not to be trusted. Running the same command again continues the
study: finished, pruned and running trials count towards `n_trials`, failed ones do not (a rerun after fixing the
mistake runs its trials); trials a dead sweep left running are counted if their run had written its metrics.json,
else marked failed and queued again with the same values. A sweep stops asking once `n_trials` trials have failed in
it, so one whose every trial fails still ends; the summary then ends the process with exit code 1.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import multiprocessing
import os
import signal
import socket
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from charmlp.cluster import slurm
from charmlp.errors import CharmlpError, TrainingInterrupted
from charmlp.rundir import record
from charmlp.sweep import search_space
from charmlp.sweep.slot import Outcome, serve

log = logging.getLogger("charmlp")


class OptunaSweep:
    """The work behind hydra_plugins.charmlp_optuna.OptunaSweeper (see the module docstring)."""

    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        params: DictConfig | None,
    ) -> None:
        if int(n_trials) < 1 or int(n_jobs) < 1:
            raise CharmlpError(f"hydra.sweeper: n_trials and n_jobs must be at least 1, got {n_trials} and {n_jobs}")
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.study_name, self.storage = study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), int(n_jobs)
        self.params = OmegaConf.to_container(params) if params else {}
        self.stop_signal: int | None = None
        self.failed = 0  # trials failed in this sweep process: it stops asking at n_trials
        self.ran: list[str] = []  # the job folders of its trials, for the summary

    def setup(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        space, fixed = search_space.parse(self.params, arguments, self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.journal = Path(self.storage) if self.storage and "://" not in self.storage else None
        if not self.storage:
            self.journal = sweep_dir / "optuna.journal"
        storage = self._storage(optuna)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self._sampler(storage),
            pruner=self.pruner or optuna.pruners.NopPruner(),
            direction=self.direction,
            load_if_exists=True,
        )
        self.space, self.fixed = space, fixed
        with self._lock():
            self._recover(study)
        launcher = str(self.config.hydra.launcher.get("_target_", ""))
        if launcher == slurm.LAUNCHER:
            log.info("trials run as Slurm jobs, %d at a time", self.n_jobs)
        elif not launcher.endswith("BasicLauncher"):
            log.warning("hydra/launcher is not used by the Optuna sweeper: trials run in its own %d slots", self.n_jobs)
        log.info(
            "Optuna study %r in %s: %d of %d trials done; %s, %s, %d at a time. Watch it: optuna-dashboard %s",
            self.study_name,
            self.journal or self.storage,
            self._counted(study),
            self.n_trials,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            self.n_jobs,
            self.journal or self.storage,
        )
        self._run_slots(study, sweep_dir)
        from charmlp.sweep.study_plots import save_plots

        save_plots(study, sweep_dir)
        stopped = self.stop_signal is not None
        best = _best(study)
        if best is not None and not stopped:
            overrides = " ".join(self._overrides(best.params))
            log.info("best: trial %d, val/loss %.4f, %s", best.number, best.value, overrides)
        if self.failed >= self.n_trials:
            log.warning("%d trials failed in this sweep: no more were asked for", self.failed)
        # summary.csv, and exit 1 if trials of this sweep failed (sweep_summary); Hydra's own call is then skipped
        self.hydra_context.callbacks.on_multirun_end(config=self.config, jobs=self.ran, stopped=stopped)
        if stopped:
            raise TrainingInterrupted(
                f"{signal.Signals(self.stop_signal).name}: the sweep stopped; its study keeps every finished trial. "
                f"Continue it with the same command and hydra.sweep.dir={sweep_dir}"
            )

    # --- the slots -----------------------------------------------------------------------------------------------

    def _run_slots(self, study: Any, sweep_dir: Path) -> None:
        """Keep every slot busy until n_trials are done (or a stop); answer reports; tell outcomes."""
        context = multiprocessing.get_context("fork")  # the slots inherit Hydra's state and the task function
        slots: dict[Connection, Any] = {}

        def start_slot() -> Connection:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=serve, args=(theirs, self.hydra_context, self.task_function, self.config), daemon=False
            )
            process.start()
            theirs.close()
            slots[ours] = process
            return ours

        self._slots = slots  # for _request_stop
        idle = [start_slot() for _ in range(self.n_jobs)]
        running: dict[Connection, Any] = {}  # slot -> its optuna Trial
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                while idle and self.stop_signal is None:
                    trial = self._next_trial(study)
                    if trial is None:
                        break
                    conn = idle.pop()
                    conn.send((trial.number, self._overrides(trial.params)))
                    running[conn] = trial
                if not running:
                    break
                for conn in wait(list(running)):
                    trial = running[conn]
                    try:
                        message = conn.recv()
                    except EOFError:  # the slot died: by the stop (queued again), or killed, out of memory (failed)
                        del running[conn], slots[conn]
                        finished = finished_outcome(trial.user_attrs.get("run_dir"))
                        if finished is not None:  # it died after its run had ended (writing its report)
                            log.info("trial %d had ended when its worker process died: counted", trial.number)
                            self._tell(study, trial, finished)
                        elif self.stop_signal is not None:
                            self._tell(study, trial, Outcome("interrupted", reason="stopped with the sweep"))
                        else:
                            self._tell(study, trial, Outcome("failed", reason="its worker process died"))
                        if self.stop_signal is None:
                            idle.append(start_slot())
                        continue
                    if message[0] == "start":
                        trial.set_user_attr("run_dir", message[1])
                        self.ran.append(os.path.relpath(message[1], sweep_dir))
                    elif message[0] == "report":
                        _, update, val_loss = message
                        trial.report(val_loss, update)
                        conn.send(trial.should_prune())
                    else:
                        del running[conn]
                        self._tell(study, trial, message[1])
                        if message[1].state == "interrupted":
                            self.stop_signal = self.stop_signal or signal.SIGINT
                        else:
                            idle.append(conn)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for conn, process in slots.items():
                with suppress(OSError):  # a slot that is gone
                    conn.send(None)
                process.join()

    def _request_stop(self, signum: int, frame: Any) -> None:
        """Ctrl-C (which a terminal sends the slots too) or SIGTERM (which is passed on to them, as a scheduler or
        `kill` sends it to this process alone): no new trials; the running ones stop after their current step,
        with their last.ckpt, and are queued again for the next run of the sweep."""
        if self.stop_signal is not None:
            return
        log.warning("%s: no new trials; the running ones stop after their current step", signal.Signals(signum).name)
        self.stop_signal = signum
        if signum == signal.SIGTERM:
            for process in self._slots.values():
                _signal(process, signal.SIGTERM)

    def _sampler(self, storage: Any) -> Any:
        """The configured sampler, its seed moved on by the trials the study already has: a continued sweep must
        not draw the same random points again (the seed alone would replay its first run's sequence)."""
        import optuna

        if not callable(self.sampler) or not isinstance(self.sampler, functools.partial):
            return self.sampler
        seed = self.sampler.keywords.get("seed")
        if seed is None:
            return self.sampler()
        try:
            done = len(optuna.load_study(study_name=self.study_name, storage=storage).get_trials(deepcopy=False))
        except KeyError:  # a new study
            done = 0
        return self.sampler(seed=int(seed) + done)

    # --- the study -----------------------------------------------------------------------------------------------

    def _storage(self, optuna: Any) -> Any:
        if self.journal is None:
            return self.storage
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        self.journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(self.journal)))

    @contextmanager
    def _lock(self):
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

    def _counted(self, study: Any) -> int:
        """Trials that count towards n_trials: finished, pruned or running (another sweep's too). Failed ones do not:
        a failure is a mistake to fix (a bad value, a missing file) or an interruption, and the rerun should run."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return len(study.get_trials(deepcopy=False, states=states))

    def _next_trial(self, study: Any) -> Any:
        """A new trial (a queued retry first), or None once n_trials are counted or have failed in this sweep."""
        from optuna.trial import TrialState

        if self.failed >= self.n_trials:  # the same mistake each time, most likely: end, and let the summary say so
            return None
        with self._lock():
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting and self._counted(study) >= self.n_trials:
                return None
            trial = study.ask(self.space)
            trial.set_user_attr("sweep", _this_process())
            log.info("trial %d: %s", trial.number, " ".join(self._overrides(trial.params, fixed=False)))
            return trial

    def _overrides(self, params: dict[str, Any], fixed: bool = True) -> list[str]:
        sampled = [search_space.override_line(name, value) for name, value in params.items()]
        return [*self.fixed, *sampled] if fixed else sampled

    def _tell(self, study: Any, trial: Any, outcome: Outcome) -> None:
        """The outcome into the study (trial: a live Trial, or for complete and pruned a FrozenTrial)."""
        from optuna.trial import TrialState

        if outcome.state == "complete":
            study.tell(trial.number, outcome.value)
            best = _best(study)
            number, value = trial.number, outcome.value
            log.info("trial %d: val/loss %.4f (best: trial %d, %.4f)", number, value, best.number, best.value)
        elif outcome.state == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
            log.info("trial %d: pruned at update %d (val/loss %.4f)", trial.number, outcome.update, outcome.value)
        elif outcome.state == "failed":
            self.failed += 1
            trial.set_user_attr("error", outcome.reason)
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, outcome.reason)
        else:
            trial.set_user_attr("error", outcome.reason)
            with self._lock():
                study.tell(trial, state=TrialState.FAIL)
                self._queue_again(study, trial.number, trial.params, trial.user_attrs.get("run_dir"))

    def _recover(self, study: Any) -> None:
        """Trials left running by a sweep process of this machine that is gone: counted if their run had written
        its metrics.json (the sweep died before the tell), else failed and queued again with the same values."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("sweep", {})
            if owner.get("host") != socket.gethostname() or _alive(owner.get("pid"), owner.get("started")):
                continue  # another machine's, or a live sweep's: not ours to judge
            run_dir = trial.user_attrs.get("run_dir")
            finished = finished_outcome(run_dir)
            if finished is not None:  # the sweep died before the tell
                log.info("trial %d had ended before the sweep stopped: counted", trial.number)
                self._tell(study, trial, finished)
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            self._queue_again(study, trial.number, trial.params, run_dir)

    def _queue_again(self, study: Any, number: int, params: dict[str, Any], run_dir: str | None) -> None:
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


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def _signal(process: Any, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(process.pid, signum)


def _this_process() -> dict[str, Any]:
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
