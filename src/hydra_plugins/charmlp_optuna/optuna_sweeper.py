"""Hydra finds sweepers only in the hydra_plugins package: this is charmlp's Optuna sweeper, hydra/sweeper=optuna.

Hydra imports every hydra_plugins module at start-up, so this one stays light; the work is in charmlp.sweep.sweeper.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Optuna (>= 4) with pruning, slots that never idle and a resumable study: conf/hydra/sweeper/optuna.yaml."""

    def __init__(self, **settings: Any) -> None:
        from charmlp.sweep.sweeper import OptunaSweep

        self.sweeper = OptunaSweep(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context, task_function, config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
