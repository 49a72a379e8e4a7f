"""Training's side of a sweep trial: val/loss reported at every validation, and a stop when the pruner says so.

A sweep slot or the Slurm launcher sets the reporter (charmlp.rundir.trial.reporting_to) around the trial it runs;
`run(cfg)` adds this callback whenever one is set, so a plain run or another sweeper never sees any of this.
"""

from __future__ import annotations

import lightning as L

from charmlp.rundir.trial import Reporter, current_reporter


def callbacks() -> list[L.Callback]:
    """The reporting callback when this process runs a sweep's trial (rundir.trial), else none."""
    reporter = current_reporter()
    return [TrialReport(reporter)] if reporter is not None else []


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
