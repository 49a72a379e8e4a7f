"""Every private Lightning attribute charmlp touches (and one of torch's), in one place, each with the reason no
public API does it.

Tested with lightning 2.6 (pyproject.toml pins lightning>=2.6,<2.7). tests/test_lightning_internals.py checks that
each attribute still exists and still does what charmlp relies on, so a Lightning release that moves one fails
there, by name, instead of silently miscounting updates. Nothing else in charmlp reads or writes a private
Lightning attribute.

Why they are needed: charmlp runs `updates_per_step` real updates inside one Lightning training step (Lightning's
per-step hooks cost more than an update of these tiny models), and some updates bypass LightningOptimizer.step
(its closure and profiler wrapping). Lightning must still count every update (trainer.global_step, max_steps, the
LR scheduler's interval) and log against it.
"""

from __future__ import annotations

from typing import Any

TESTED = "lightning>=2.6,<2.7"


def count_updates(trainer: Any, n: int) -> None:
    """Count n updates that stepped without LightningOptimizer.step, at once (`optim_step_progress` of the manual
    optimization loop, which trainer.global_step reads): what `_on_before_step` and `_on_after_step` add once per
    step, n times, without their two calls per update (the hand-written update is ~60 us; those calls are 2-3)."""
    trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_by(n)


def before_step(optimizer: Any) -> None:
    """What LightningOptimizer.step runs before the torch step (`_on_before_step`), for an update that steps itself.
    Looked up on every call: the manual-optimization loop installs these hooks afresh at each Lightning step."""
    optimizer._on_before_step()


def after_step(optimizer: Any) -> None:
    """What LightningOptimizer.step runs after it (`_on_after_step`): this counts the update in trainer.global_step."""
    optimizer._on_after_step()


def mark_stepped(optimizer: Any) -> None:
    """Tell torch's LR scheduler that the torch optimizer's step() ran (`_opt_called`, which the scheduler's wrapper
    of step() sets; torch's, not Lightning's, private attribute) when charmlp's own loop is that step: the scheduler
    warns otherwise. `optimizer` is the LightningOptimizer."""
    optimizer.optimizer._opt_called = True


def set_batches_done(trainer: Any, batches: int) -> None:
    """Set the fit loop's batch counters (`batch_progress`, an internal of the epoch loop): Lightning counts its
    batches and validates every val_check_interval of them, so a resume with another `updates_per_step` must count
    the updates done in batches of this run's size, or validation moves."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for counter in (progress.total, progress.current):
        counter.ready = counter.started = counter.processed = counter.completed = batches


def set_logging_step(trainer: Any, step: int) -> None:
    """Make Lightning log self.log() and the stock callbacks (LearningRateMonitor, ...) against update `step` + 1
    (`_batches_that_stepped`, which Lightning adds 1 to after the step), so every chart shares one x-axis: updates."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = step
