"""The sweeper's slot pool: forked slot processes kept busy with trials, their reports relayed, Ctrl-C and SIGTERM.

Each slot (`charmlp.sweep.slot.serve`) runs the trials it is sent, one after another, and takes the next as soon as
one ends: Hydra's launchers take a batch of jobs and return when the slowest has ended, so a slot whose trial was
pruned would wait for the others. The pool knows no Optuna: the sweeper hands it callables that give the next trial,
record where it runs, answer its val/loss reports with a verdict and take its outcome; a trial is a `Job`, whose
`trial` the pool only passes back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from charmlp.sweep.slot import Outcome, serve
from charmlp.sweep.store import finished_outcome

log = logging.getLogger("charmlp")


@dataclass
class Job:
    """A trial for a slot: the sweeper's own handle on it (passed back to its callables), its number, its overrides."""

    trial: Any
    number: int
    overrides: list[str]
    run_dir: str | None = None  # where it runs, once its slot said


class SlotPool:
    """n_jobs slot processes, forked from the sweeper, and its handling of Ctrl-C and SIGTERM while they run."""

    def __init__(
        self, n_jobs: int, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.n_jobs = n_jobs
        self.context = multiprocessing.get_context("fork")  # the slots inherit Hydra's state and the task function
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.stop_signal: int | None = None  # the Ctrl-C or SIGTERM that stopped the sweep (or an interrupted trial)
        self.slots: dict[Connection, Any] = {}  # slot -> its process

    def run(
        self,
        next_job: Callable[[], Job | None],
        started: Callable[[Any, str], None],
        report: Callable[[Any, int, float], bool],
        tell: Callable[[Any, Outcome], None],
    ) -> None:
        """Keep every slot busy until next_job has none left (or a stop); answer reports; tell outcomes.

        next_job: the next trial, or None; started(trial, run_dir): where it runs; report(trial, update, val_loss):
        whether to prune it; tell(trial, outcome): how it ended."""
        idle = [self._start_slot() for _ in range(self.n_jobs)]
        running: dict[Connection, Job] = {}  # slot -> its trial
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while True:
                while idle and self.stop_signal is None:
                    job = next_job()
                    if job is None:
                        break
                    conn = idle.pop()
                    conn.send((job.number, job.overrides))
                    running[conn] = job
                if not running:
                    break
                for conn in wait(list(running)):
                    job = running[conn]
                    try:
                        message = conn.recv()
                    except EOFError:  # the slot died: by the stop (queued again), or killed, out of memory (failed)
                        del running[conn], self.slots[conn]
                        finished = finished_outcome(job.run_dir)
                        if finished is not None:  # it died after its run had ended (writing its report)
                            log.info("trial %d had ended when its worker process died: counted", job.number)
                            tell(job.trial, finished)
                        elif self.stop_signal is not None:
                            tell(job.trial, Outcome("interrupted", reason="stopped with the sweep"))
                        else:
                            tell(job.trial, Outcome("failed", reason="its worker process died"))
                        if self.stop_signal is None:
                            idle.append(self._start_slot())
                        continue
                    if message[0] == "start":
                        job.run_dir = message[1]
                        started(job.trial, message[1])
                    elif message[0] == "report":
                        _, update, val_loss = message
                        conn.send(report(job.trial, update, val_loss))
                    else:
                        del running[conn]
                        tell(job.trial, message[1])
                        if message[1].state == "interrupted":
                            self.stop_signal = self.stop_signal or signal.SIGINT
                        else:
                            idle.append(conn)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for conn, process in self.slots.items():
                with suppress(OSError):  # a slot that is gone
                    conn.send(None)
                process.join()

    def _start_slot(self) -> Connection:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(
            target=serve, args=(theirs, self.hydra_context, self.task_function, self.config), daemon=False
        )
        process.start()
        theirs.close()
        self.slots[ours] = process
        return ours

    def _request_stop(self, signum: int, frame: Any) -> None:
        """Ctrl-C (which a terminal sends the slots too) or SIGTERM (which is passed on to them, as a scheduler or
        `kill` sends it to this process alone): no new trials; the running ones stop after their current step,
        with their last.ckpt, and are queued again for the next run of the sweep."""
        if self.stop_signal is not None:
            return
        log.warning("%s: no new trials; the running ones stop after their current step", signal.Signals(signum).name)
        self.stop_signal = signum
        if signum == signal.SIGTERM:
            for process in self.slots.values():
                _signal(process, signal.SIGTERM)


def _signal(process: Any, signum: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(process.pid, signum)
