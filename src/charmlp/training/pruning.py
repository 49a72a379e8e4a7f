"""A sweep trial's link to its study: val/loss reported at every validation, and a stop when the pruner says so.

The Optuna sweeper's worker process sets the reporter (`reporting_to`) around the trial it runs; `run(cfg)` adds
the callback whenever one is set, so a plain run or another sweeper never sees any of this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import lightning as L

Reporter = Callable[[int, float], bool]  # (update, val/loss) -> prune now?
_reporter: Reporter | None = None


@contextmanager
def reporting_to(reporter: Reporter) -> Iterator[None]:
    """Within this block, training runs report to `reporter` (a trial of the sweep)."""
    global _reporter
    _reporter = reporter
    try:
        yield
    finally:
        _reporter = None


def callbacks() -> list[L.Callback]:
    return [TrialReport(_reporter)] if _reporter is not None else []


class TrialReport(L.Callback):
    """Reports val/loss after each validation and ends training there when the trial is to be pruned. Only the
    sweep's slot process has one, so under DDP (ranks > 0 are processes of their own) it reports and never stops."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.pruned_at: int | None = None  # the update training stopped at, when pruned

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or val is None:
            return
        prune = self.reporter(trainer.global_step, float(val))
        if trainer.world_size > 1:  # DDP: the ranks Lightning started have no link to the trial, so no collective
            return  # to agree on a stop with: report only, never prune
        finished = trainer.global_step >= trainer.max_steps  # the last validation: the run is complete, not pruned
        if prune and not finished:
            self.pruned_at = trainer.global_step
            trainer.should_stop = True
