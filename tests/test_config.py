"""Every config in conf/ composes, and the defaults are the lecture's recipe."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from .conftest import ROOT, compose_cfg

GROUP_OPTIONS = [
    f"{group.name}={option.stem}"
    for group in sorted((ROOT / "conf").iterdir())
    if group.is_dir() and group.name not in ("hydra",)
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_every_config_composes(tmp_path: Path, override: str):
    cfg = compose_cfg(tmp_path, override)
    assert cfg.trainer.max_steps >= 1 and cfg.data.block_size >= 1


def test_defaults_are_the_lecture(tmp_path):
    cfg = compose_cfg(tmp_path)
    assert (cfg.data.block_size, cfg.data.batch_size, cfg.data.split_seed) == (3, 32, 42)
    assert (cfg.model.emb_dim, cfg.model.hidden_dim, cfg.model.init) == (10, 200, "normal")
    assert cfg.optimizer.lr == 0.1 and list(cfg.scheduler.milestones) == [100000] and cfg.scheduler.gamma == 0.1
    assert cfg.trainer.max_steps == 200000 and cfg.trainer.val_check_interval == 10000
    assert Path(cfg.data.path) == ROOT / "data" / "names.txt"


def test_trainer_config_instantiates(tmp_path):
    cfg = compose_cfg(tmp_path, "trainer.max_steps=10")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.max_steps == 10


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1
