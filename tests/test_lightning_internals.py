"""Every private attribute charmlp.training.lightning_internals touches still exists and still does its job in the
installed Lightning (and torch): a release that moves one fails here, by name. Their effect on whole runs is
tested too: the update count (test_training), the logged x-axis (test_training), validation after a resume with
another updates_per_step (test_resume)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from charmlp.training import lightning_internals


def sgd() -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_the_step_hooks_exist_on_a_lightning_optimizer_and_are_called():
    optimizer = LightningOptimizer(sgd())
    calls = []
    optimizer._on_before_step = lambda: calls.append("before")  # what the manual loop installs at each step
    optimizer._on_after_step = lambda: calls.append("after")
    lightning_internals.before_step(optimizer)
    lightning_internals.after_step(optimizer)
    assert calls == ["before", "after"]
    assert callable(LightningOptimizer(sgd())._on_before_step) and callable(LightningOptimizer(sgd())._on_after_step)


def _scheduler_warnings(mark: bool) -> list[str]:
    optimizer = sgd()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    if mark:
        lightning_internals.mark_stepped(SimpleNamespace(optimizer=optimizer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scheduler.step()
    return [str(w.message) for w in caught]


def test_mark_stepped_is_what_torchs_scheduler_reads():
    assert any("optimizer.step()" in m for m in _scheduler_warnings(mark=False))  # torch still checks it
    assert _scheduler_warnings(mark=True) == []


@pytest.fixture
def trainer() -> L.Trainer:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)


def test_set_batches_done_sets_every_batch_counter(trainer):
    lightning_internals.set_batches_done(trainer, 7)
    progress = trainer.fit_loop.epoch_loop.batch_progress
    for counter in (progress.total, progress.current):
        assert (counter.ready, counter.started, counter.processed, counter.completed) == (7, 7, 7, 7)


def test_set_logging_step_sets_the_step_lightning_logs_against(trainer):
    loop = trainer.fit_loop.epoch_loop
    assert isinstance(loop._batches_that_stepped, int)
    lightning_internals.set_logging_step(trainer, 41)
    assert loop._batches_that_stepped == 41
