#!/usr/bin/env python
"""Train a character-level MLP: python train.py [experiment=lecture] [group=option] [key=value ...].

Hydra composes conf/train.yaml; see README for the groups. Errors a user can cause print one line and
exit with code 2 (130 after Ctrl-C, with the command to resume).
"""

import os
import sys
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from charmlp.errors import CharmlpError
from charmlp.training.config import config_error_line, register_resolvers

CONF = Path(__file__).parent / "conf"
register_resolvers(Path(__file__).parent)


def check_group_choices(args: list[str]) -> None:
    """`group=option` naming no file in conf/group/ gets one line here instead of Hydra's multi-line report."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        group = CONF / key
        # hydra/... groups also take options from installed plugins (joblib, optuna, submitit)
        if not sep or "." in key or key.startswith("hydra") or not group.is_dir() or "," in value or not value:
            continue
        if value == "null":  # Hydra 1.3 raises a bare ValueError for it
            raise CharmlpError(f"{key}=null: to go without any {key} option, drop the group with ~{key}")
        if not (group / f"{value}.yaml").is_file():
            options = ", ".join(sorted(p.stem for p in group.glob("*.yaml")))
            raise CharmlpError(f"{key}={value}: no such option; {key} is one of: {options}")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from charmlp.training.entry import train_job  # heavy imports only once Hydra has parsed the command line

    return train_job(cfg)


if __name__ == "__main__":
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("SLURM_PROCID", "0") != "0":
        # a DDP rank that Lightning (or srun, in your own sbatch script) started: no files of its own
        from charmlp.cluster.ddp import child_rank_args
        from charmlp.cluster.slurm import QUIET_RANK

        sys.argv[1:] = child_rank_args(sys.argv[1:])  # its rank 0's job only, not the whole sweep
        sys.argv += QUIET_RANK
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its config errors instead of printing them and exiting 1
    try:
        check_group_choices(sys.argv[1:])
        main()
    except CharmlpError as err:  # raised while Hydra composes (e.g. an unknown experiment is Hydra's own)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # Ctrl-C outside training (setup, test, plots): checkpoints and metrics.json stay
        print("error: interrupted; the run directory keeps what was written (checkpoints/last.ckpt)", file=sys.stderr)
        sys.exit(130)
    except (HydraException, OmegaConfBaseException) as err:  # a typo in a key, an unparsable override, ...
        print(f"error: {config_error_line(err, CONF)}", file=sys.stderr)
        sys.exit(2)
