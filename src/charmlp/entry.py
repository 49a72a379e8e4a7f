"""What train.py runs inside Hydra: one job, with user errors turned into one line instead of a traceback."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from charmlp.errors import CharmlpError

log = logging.getLogger("charmlp")


def record_failure(run_dir: Path, message: str) -> None:
    """A failed sweep job still leaves metrics.json, so the sweep summary can say what went wrong."""
    path = run_dir / "metrics.json"
    if not path.exists():
        path.write_text(json.dumps({"error": message}) + "\n")


def train_job(cfg: DictConfig) -> float:
    """Run one job. In a multirun a failed job is logged and scored inf, so the other jobs go on."""
    try:
        from charmlp.train import run

        return run(cfg)
    except CharmlpError as err:
        print(f"error: {err}", file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN and err.exit_code == 2:
            log.error("job %s failed: %s", HydraConfig.get().job.num, err)
            record_failure(Path(HydraConfig.get().runtime.output_dir), str(err))
            return math.inf
        sys.exit(err.exit_code)
