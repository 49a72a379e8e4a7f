"""What train.py runs inside Hydra: one job, with user errors turned into one line instead of a traceback."""

from __future__ import annotations

import logging
import math
import sys
import types
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from charmlp.data.words import check_readable
from charmlp.errors import CharmlpError
from charmlp.rundir import record
from charmlp.rundir.checkpoints import resolve_ckpt_path
from charmlp.training.config import type_mistakes

log = logging.getLogger("charmlp")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed_everything's range


def check_early(cfg: DictConfig) -> None:
    """Mistakes that need no torch: value types against the defaults, the word file, the checkpoint to resume."""
    hydra_cfg = HydraConfig.get()
    groups = [f"{g}={c}" for g, c in hydra_cfg.runtime.choices.items() if c is not None and not g.startswith("hydra")]
    defaults = compose(config_name=hydra_cfg.job.config_name, overrides=groups)
    mistakes = type_mistakes(cfg, defaults)
    if mistakes:
        raise CharmlpError("; ".join(mistakes))
    if not 0 <= int(cfg.seed) <= MAX_SEED:
        raise CharmlpError(f"seed must be between 0 and {MAX_SEED}, got {cfg.seed}")
    if cfg.trainer.get("fast_dev_run"):
        raise CharmlpError(
            "trainer.fast_dev_run is not supported: it turns off the checkpoints that the test and the results are "
            "read from; for a quick try run trainer.max_steps=200 trainer.val_check_interval=100"
        )
    check_readable(cfg.data.path)
    resolve_ckpt_path(cfg.ckpt_path)


def tensorboard_without_tensorflow() -> None:
    """Keep TensorFlow out of the training process where it is installed.

    TensorBoard's event writer imports TensorFlow when it can (for tf.io.gfile), and with it loaded charmlp's
    small-batch training runs a quarter slower (lecture_bn, 20,000 updates: 27-30 s against 21-22 s).
    `tensorboard.compat.notf` is TensorBoard's own switch to its TensorFlow stub (tensorboard/compat/__init__.py),
    which writes the same event files. Before torch or Lightning import TensorBoard.
    """
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def train_job(cfg: DictConfig) -> float:
    """Run one job. In a multirun a failed job is logged and scored inf, so the other jobs go on."""
    try:
        check_early(cfg)
        tensorboard_without_tensorflow()
        from charmlp.training.run import run  # torch and Lightning: seconds of imports, so only after the quick checks

        return run(cfg)
    except CharmlpError as err:
        print(f"error: {err}" if err.exit_code else str(err), file=sys.stderr)
        if HydraConfig.get().mode == RunMode.MULTIRUN and err.exit_code == 2:
            log.error("job %s failed: %s", HydraConfig.get().job.num, err)
            record.record_failure(Path(HydraConfig.get().runtime.output_dir), str(err))
            return math.inf
        sys.exit(err.exit_code)
