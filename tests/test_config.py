"""Every config in conf/ composes, and the defaults are the lecture's recipe."""

from pathlib import Path

import pytest
from hydra.utils import instantiate

from .conftest import ROOT, compose_cfg

GROUP_OPTIONS = [
    f"{group.name}={option.stem}"
    for group in sorted((ROOT / "conf").iterdir())
    if group.is_dir() and group.name not in ("hydra", "tuned")
    for option in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_every_config_composes(tmp_path: Path, override: str):
    cfg = compose_cfg(tmp_path, override)
    assert cfg.trainer.max_steps >= 1
    # whole words take the longest word + 1 (null) unless given; windows always give a number
    assert cfg.data.block_size >= 1 if cfg.data.block_size is not None else cfg.data.mode == "words"


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


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_experiments_set_only_keys_every_option_of_a_group_has(experiment):
    # merged after the option a user picked, a key of one option lands in another (scheduler=onecycle got the step
    # schedule's milestones); an experiment picks options by name, and conf/tuned/ holds its per-option values
    from omegaconf import OmegaConf

    def keys(group: str, option: str) -> set[str]:  # what an option's file sets, with the files it builds on
        data = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / group / f"{option}.yaml"))
        return set(data) - {"defaults"} | {k for base in data.get("defaults", []) for k in keys(group, base)}

    data = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "experiment" / f"{experiment}.yaml"))
    for group, values in data.items():
        options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")) if group != "defaults" else []
        if len(options) > 1:
            shared = set.intersection(*(keys(group, option) for option in options))
            assert set(values) <= shared, f"{experiment} sets {set(values) - shared} of only some {group} options"


def test_each_tuned_file_belongs_to_one_experiment_and_option():
    """conf/tuned/EXPERIMENT_OPTION.yaml is found by joining the two names: no two pairs may join to one name."""
    experiments = [f.stem for f in (ROOT / "conf" / "experiment").glob("*.yaml")]
    options = [f.stem for group in ("model", "optimizer", "scheduler") for f in (ROOT / "conf" / group).glob("*.yaml")]
    for tuned in (ROOT / "conf" / "tuned").glob("*.yaml"):
        pairs = [(e, o) for e in experiments for o in options if f"{e}_{o}" == tuned.stem]
        assert len(pairs) == 1, f"{tuned.name}: {pairs}"


def test_a_picked_option_keeps_its_own_values_under_an_experiment(tmp_path):
    best = compose_cfg(tmp_path, "experiment=best")
    assert best.optimizer._target_ == "torch.optim.AdamW" and (best.optimizer.lr, best.optimizer.weight_decay) == (
        0.003,
        0.01,
    )  # its tuned values (conf/tuned/best_adamw.yaml)
    picked = compose_cfg(tmp_path, "experiment=best", "optimizer=sgd", "scheduler=step")
    assert picked.optimizer.lr == 0.1 and list(picked.scheduler.milestones) == [100000]  # sgd's and step's own
    assert compose_cfg(tmp_path, "optimizer=adamw").optimizer.lr == 0.02  # not the lecture's SGD lr 0.1
    assert "milestones" not in compose_cfg(tmp_path, "scheduler=onecycle").scheduler
