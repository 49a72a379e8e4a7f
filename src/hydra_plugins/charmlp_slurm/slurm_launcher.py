"""Hydra finds launchers only in the hydra_plugins package: this is charmlp's Slurm launcher, hydra/launcher=slurm.

Hydra imports every hydra_plugins module at start-up, so this one stays light (submitit is imported only when a sweep
launches); the work is in charmlp.cluster.slurm_launcher.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # without the sweep extra there is no hydra/launcher=slurm to use this for
    SubmititSlurmLauncher = object  # type: ignore[assignment,misc]


class SlurmLauncher(SubmititSlurmLauncher):
    """hydra-submitit-launcher's, with DDP tasks that leave the run directory to rank 0, waiting that works without
    accounting, and jobs ending without a result as failed rows of the summary: conf/hydra/launcher/slurm.yaml."""

    def __call__(
        self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str, singleton_state: dict
    ) -> JobReturn:
        """In the job, on every task srun started: rank 0 runs the Hydra job as usual, other ranks quietly."""
        from charmlp.cluster.slurm import QUIET_RANK, global_rank

        if global_rank() != 0:
            sweep_overrides = [*sweep_overrides, *QUIET_RANK]
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from charmlp.cluster.slurm_launcher import launch

        return launch(self, job_overrides, initial_job_idx)
