"""charmlp's Optuna sweeper: ask-and-tell over slots that never idle, pruning, and a study that outlives the sweep.

The sweeper process owns the study: it asks for a trial whenever a slot is free, answers each slot's val/loss
reports with the pruner's verdict, and tells the outcome. The slots are forked worker processes
(`charmlp.sweep.slot.serve`, kept busy by `charmlp.sweep.pool`), not Hydra's launcher: a launcher takes a batch of
jobs and returns when the slowest has ended, so a slot whose trial was pruned would wait for the others; here it
takes the next trial at once.

The study lives in Optuna's journal file `<sweep dir>/optuna.journal` unless `storage` names another
(`charmlp.sweep.store`: the storage, its lock, the recovery of dead trials). Running the same command again
continues the study: finished, pruned and running trials count towards `n_trials`, failed ones do not (a rerun
after fixing the mistake runs its trials); trials a dead sweep left running are counted if their run had written
its metrics.json, else marked failed and queued again with the same values. A sweep stops asking once `n_trials`
trials have failed in it, so one whose every trial fails still ends; the summary then ends the process with exit
code 1.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from charmlp.cluster import slurm
from charmlp.errors import CharmlpError, TrainingInterrupted
from charmlp.sweep import search_space
from charmlp.sweep.pool import Job, SlotPool
from charmlp.sweep.slot import Outcome
from charmlp.sweep.store import StudyStore, this_process

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
        self.store = StudyStore(self.study_name, self.storage, sweep_dir)
        storage = self.store.open()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.store.sampler(self.sampler, storage),
            pruner=self.pruner or optuna.pruners.NopPruner(),
            direction=self.direction,
            load_if_exists=True,
        )
        self.space, self.fixed = space, fixed
        with self.store.lock():
            self.store.recover(study, functools.partial(self._tell, study))
        launcher = str(self.config.hydra.launcher.get("_target_", ""))
        if launcher == slurm.LAUNCHER:
            log.info("trials run as Slurm jobs, %d at a time", self.n_jobs)
        elif not launcher.endswith("BasicLauncher"):
            log.warning("hydra/launcher is not used by the Optuna sweeper: trials run in its own %d slots", self.n_jobs)
        log.info(
            "Optuna study %r in %s: %d of %d trials done; %s, %s, %d at a time. Watch it: optuna-dashboard %s",
            self.study_name,
            self.store.where,
            self._counted(study),
            self.n_trials,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            self.n_jobs,
            self.store.where,
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
        """Keep every slot busy until n_trials are done (or a stop): the pool asks, reports and tells through these."""

        def next_job() -> Job | None:
            trial = self._next_trial(study)
            return None if trial is None else Job(trial, trial.number, self._overrides(trial.params))

        def started(trial: Any, run_dir: str) -> None:
            trial.set_user_attr("run_dir", run_dir)
            self.ran.append(os.path.relpath(run_dir, sweep_dir))

        def report(trial: Any, update: int, val_loss: float) -> bool:
            trial.report(val_loss, update)
            return trial.should_prune()

        pool = SlotPool(self.n_jobs, self.hydra_context, self.task_function, self.config)
        pool.run(next_job, started, report, functools.partial(self._tell, study))
        self.stop_signal = pool.stop_signal

    # --- ask and tell --------------------------------------------------------------------------------------------

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
        with self.store.lock():
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if not waiting and self._counted(study) >= self.n_trials:
                return None
            trial = study.ask(self.space)
            trial.set_user_attr("sweep", this_process())
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
            with self.store.lock():
                study.tell(trial, state=TrialState.FAIL)
                self.store.queue_again(study, trial.number, trial.params, trial.user_attrs.get("run_dir"))


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None
