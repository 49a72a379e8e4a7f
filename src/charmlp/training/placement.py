"""Where a single run writes, decided before Hydra writes anything: a resume in its run's own directory, never over
another run (a Hydra callback; no torch until a checkpoint is checked)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from charmlp.cluster.slurm import restarts
from charmlp.errors import CharmlpError
from charmlp.rundir import record
from charmlp.rundir.checkpoints import resolve_ckpt_path


def run_home(ckpt: Path) -> Path | None:
    """The run directory a checkpoint belongs to (RUN/checkpoints/NAME.ckpt with RUN/.hydra), or None."""
    run_dir = ckpt.absolute().parent.parent
    return run_dir if ckpt.absolute().parent.name == "checkpoints" and (run_dir / ".hydra").is_dir() else None


def holds_run(run_dir: Path) -> bool:
    """Whether a directory already holds a training run's files (its config, checkpoints or results)."""
    return any((run_dir / name).exists() for name in (".hydra", "checkpoints", record.FILE))


class RunPlacement(Callback):
    """Where a single run (not a multirun) writes, decided before Hydra writes anything there.

    - `ckpt_path=` of a run's own checkpoint continues in that run's directory (best.ckpt, last.ckpt, train.log,
      TensorBoard curves and metrics.json go on), unless the command line gives `hydra.run.dir`; `ckpt_path=last`
      is resolved here once, so .hydra/config.yaml records the file used.
    - The checkpoint must fit the config (training.resume), else one line and exit 2, before anything is written.
    - `hydra.run.dir=` a directory that holds another run is refused: its checkpoints, config and logs stay as
      they are (a Slurm job started again in its own directory resumes there, charmlp.cluster.slurm).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("SLURM_PROCID", "0") != "0":
            return  # a DDP rank > 0 runs in its rank 0's directory, which rank 0 has checked and begun
        try:
            place_run(config)
        except CharmlpError as err:  # Hydra's callbacks turn an Exception into a warning: exit here, in one line
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(err.exit_code) from None


def place_run(config: DictConfig) -> None:
    """RunPlacement's work: resolve and check the checkpoint, move the run into its directory, guard others."""
    ckpt = None
    if config.get("ckpt_path"):
        ckpt = Path(resolve_ckpt_path(str(config.ckpt_path)))
        given_dir = any(o.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for o in config.hydra.overrides.hydra)
        home = run_home(ckpt)
        with read_write(config), open_dict(config):
            config.ckpt_path = str(ckpt)
            if home is not None and not given_dir:
                config.hydra.run.dir = str(home)
        from charmlp.training.resume import check_resume

        check_resume(config, ckpt)
    run_dir = Path(str(config.hydra.run.dir)).absolute()
    inside = ckpt is not None and run_dir in ckpt.absolute().parents
    if holds_run(run_dir) and not inside and restarts() == 0:
        raise CharmlpError(
            f"hydra.run.dir={run_dir} already holds a run; give a new directory, or continue that run with "
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
        )
