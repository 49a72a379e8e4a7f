"""mode=lr_find: the configured optimizer's updates, the old plain-SGD numbers, any model option."""

import copy
import math

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from charmlp.errors import CharmlpError
from charmlp.training.hand_step import HandStep
from charmlp.training.lr_find import lr_sweep
from charmlp.training.run import build_datamodule, build_module, run

from .conftest import compose_cfg


def build(tmp_path, words, *overrides):
    cfg = compose_cfg(tmp_path, f"data.path={words}", *overrides)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    model = build_module(cfg, datamodule).net
    optimizer = instantiate(dict(cfg.optimizer), params=model.parameters(), _convert_="all")
    return datamodule, model, optimizer


def test_plain_sgd_gives_the_losses_of_the_hand_written_step(tmp_path, tiny_words):
    datamodule, model, optimizer = build(tmp_path, tiny_words)
    reference = copy.deepcopy(model)
    # ten updates up to lr 0.1; at lrs past the valley each update amplifies rounding differences (as in training)
    exponents = torch.linspace(-3, -1, 10)
    losses = lr_sweep(model, optimizer, datamodule, exponents)
    xs, ys = next(iter(datamodule.train_dataloader())).draw(len(exponents))  # the same minibatches again
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
    hand = HandStep(reference, sgd)  # training's hand-written update
    expected = []
    for x, y, e in zip(xs.numpy(), ys.numpy(), exponents.tolist()):
        sgd.param_groups[0]["lr"] = 10**e
        expected.append(hand(x, y))
    assert max(abs(a - b) for a, b in zip(losses, expected)) < 1e-5


def test_every_update_sets_every_groups_lr(tmp_path, tiny_words):
    datamodule, model, optimizer = build(tmp_path, tiny_words, "optimizer=adamw")
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    exponents = torch.tensor([-3.0, -2.5, -2.0])
    assert len(lr_sweep(model, optimizer, datamodule, exponents)) == 3
    assert [g["lr"] for g in optimizer.param_groups] == [10**-2.0] * 2


def test_the_sweep_stops_at_a_non_finite_loss(tmp_path, tiny_words):
    datamodule, model, optimizer = build(tmp_path, tiny_words)
    losses = lr_sweep(model, optimizer, datamodule, torch.tensor([0.0, 38, 38, 38, 38, 38]))
    assert len(losses) < 6 and not math.isfinite(losses[-1]) and all(map(math.isfinite, losses[:-1]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=adamw"],
        ["model.dropout=0.3"],
        ["optimizer=adamw", "model.dropout=0.3", "model.num_hidden=2", "model.init=scaled"],
    ],
)
def test_lr_find_runs_with_any_optimizer_and_model(tmp_path, tiny_words, overrides):
    cfg = compose_cfg(tmp_path, f"data.path={tiny_words}", "mode=lr_find", "lr_find_steps=50", *overrides)
    lr = run(cfg)
    assert 10**-3.5 <= lr <= 1
    assert (tmp_path / "lr_find.png").stat().st_size > 0


def test_lr_find_steps_must_be_positive(tmp_path, tiny_words):
    with pytest.raises(CharmlpError, match="lr_find_steps"):
        run(compose_cfg(tmp_path, f"data.path={tiny_words}", "mode=lr_find", "lr_find_steps=0"))


def test_the_lectures_suggestion_is_still_about_0_07(tmp_path):
    lr = run(compose_cfg(tmp_path, "mode=lr_find"))
    assert lr == pytest.approx(0.0677, abs=0.001)
