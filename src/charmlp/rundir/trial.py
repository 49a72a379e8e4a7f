"""A sweep trial's link to its study: who a training run reports its val/loss to, and hears "prune" from.

A sweep slot (charmlp.sweep.slot) or the Slurm launcher's job (charmlp.cluster.slurm_launcher) sets the reporter
around the trial it runs; training (charmlp.training.pruning) adds its reporting callback whenever one is set, so
a plain run or another sweeper never sees any of this. torch-free: the sweeps set it without importing training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def current_reporter() -> Reporter | None:
    """The reporter of the trial this process runs, or None outside a sweep's trial."""
    return _reporter
