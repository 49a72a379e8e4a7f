"""The loop's semantics: updates counted by max_steps, the LR milestone, determinism, exact resume."""

import json
import math

import pytest
import torch

from charmlp.errors import CharmlpError
from charmlp.model.lecture import LectureMLP
from charmlp.training.run import run

from .conftest import compose_cfg

SMALL = ["trainer.val_check_interval=500", "updates_per_step=100"]


def metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_updates_equal_max_steps_and_lr_switches_at_the_milestone(tmp_path):
    cfg = compose_cfg(tmp_path, "trainer.max_steps=1050", "scheduler.milestones=[600]", *SMALL)
    val = run(cfg)
    m = metrics(tmp_path)
    assert m["steps"] == 1050 and m["val/loss"] == pytest.approx(val)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1050
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 1050  # stepped once per update
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.01)


def test_lr_before_the_milestone(tmp_path):
    run(compose_cfg(tmp_path, "trainer.max_steps=500", "scheduler.milestones=[600]", *SMALL))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.1)


def test_short_training_beats_the_uniform_baseline(tmp_path):
    # the seed's N(0, 1) init starts near loss 20 and needs ~5k updates to get here; the scaled one starts at 3.3
    run(compose_cfg(tmp_path, "trainer.max_steps=2000", "model.init=scaled", *SMALL))
    assert metrics(tmp_path)["val/loss"] < 3.30 - 0.5  # ln(27) = 3.30: the uniform guess


def test_same_seed_same_val_loss_other_seed_other(tmp_path):
    a = run(compose_cfg(tmp_path / "a", "trainer.max_steps=600", "seed=3", *SMALL))
    b = run(compose_cfg(tmp_path / "b", "trainer.max_steps=600", "seed=3", *SMALL))
    c = run(compose_cfg(tmp_path / "c", "trainer.max_steps=600", "seed=4", *SMALL))
    assert a == b and a != c


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["fused_sgd=false"],
        ["model.dropout=0.1", "model.init=scaled"],
        # fused AdamW's state and the CPU dropout mask; its val curve is not monotone, so best.ckpt (whose
        # val/loss run returns) is only the same if validation lands on the same updates after the resume
        ["optimizer=adamw", "optimizer.lr=0.003", "model.dropout=0.3", "model.init=scaled"],
        # batch norm's running statistics are in the checkpoint (the state_dict check below compares them too)
        ["experiment=lecture_wavenet", "model.hidden_dim=16", "model.dropout=0.1"],
    ],
)
def test_resume_equals_straight(tmp_path, extra):
    straight = run(compose_cfg(tmp_path / "a", "trainer.max_steps=1000", *SMALL, *extra))
    run(compose_cfg(tmp_path / "b", "trainer.max_steps=450", *SMALL, *extra))  # stops mid Lightning step
    resumed = run(
        compose_cfg(
            tmp_path / "c",
            "trainer.max_steps=1000",
            f"ckpt_path={tmp_path / 'b/checkpoints/last.ckpt'}",
            *SMALL,
            *extra,
        )
    )
    assert resumed == pytest.approx(straight, abs=1e-6)
    assert metrics(tmp_path / "c")["steps"] == 1000
    last = [torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True) for d in "ac"]
    for name, weights in last[0]["state_dict"].items():
        assert torch.equal(weights, last[1]["state_dict"][name]), name


def test_fused_and_autograd_paths_train_alike(tmp_path):
    fused = run(compose_cfg(tmp_path / "a", "trainer.max_steps=500", *SMALL))
    autograd = run(compose_cfg(tmp_path / "b", "trainer.max_steps=500", "fused_sgd=false", *SMALL))
    assert fused == pytest.approx(autograd, rel=1e-3)  # same math; float rounding differs after 500 updates


@pytest.mark.parametrize(
    "extra",
    [
        ["experiment=lecture_bn", "model.hidden_dim=32"],  # plain SGD: the lean path's own p += -lr * grad
        ["optimizer=adamw", "model.dropout=0.2", "model.init=scaled"],  # AdamW's step, the CPU dropout mask
    ],
)
def test_lean_path_equals_lightnings_to_the_bit(tmp_path, extra):
    """One fp32 process on autograd skips Lightning's per-update machinery; a clipping threshold no gradient reaches
    takes Lightning's manual_backward + optimizer.step() instead, with the same arithmetic: the same weights."""
    args = ["trainer.max_steps=300", "fused_sgd=false", *SMALL, *extra]
    run(compose_cfg(tmp_path / "lean", *args))
    run(compose_cfg(tmp_path / "lightning", *args, "trainer.gradient_clip_val=1e30"))
    lean, lightning = (
        torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in ("lean", "lightning")
    )
    for name, weights in lean.items():
        assert torch.equal(weights, lightning[name]), name


def test_checkpoint_loads_with_weights_only_and_without_torch(tmp_path):
    from charmlp.sampling.ckpt_reader import read_checkpoint

    run(compose_cfg(tmp_path, "trainer.max_steps=200", *SMALL))
    path = tmp_path / "checkpoints" / "best.ckpt"
    safe = torch.load(path, weights_only=True)
    plain = read_checkpoint(path)
    for key, tensor in safe["state_dict"].items():
        assert (plain["state_dict"][key] == tensor.numpy()).all()
    assert plain["hyper_parameters"] == safe["hyper_parameters"]


def test_non_finite_loss_names_the_update():
    from charmlp.training.module import CharLMModule, NonFiniteLossError

    CharLMModule._check_finite(torch.tensor([2.0, 1.5]), first_update=101)  # finite: nothing happens
    with pytest.raises(NonFiniteLossError, match="became nan at update 102"):
        CharLMModule._check_finite(torch.tensor([2.0, float("nan"), float("inf")]), first_update=101)


def test_gradient_clipping_by_norm_caps_the_first_update(tmp_path):
    # plain SGD, lr 0.1, gradients clipped to norm 0.01: the first update moves the weights by exactly 0.1 * 0.01
    # (the N(0, 1) init's gradient norm is far above 0.01); the fast path steps aside for clipping
    one = ["trainer.max_steps=1", "updates_per_step=1", "trainer.val_check_interval=1", "model.hidden_dim=20"]
    run(compose_cfg(tmp_path, *one, "trainer.gradient_clip_val=0.01"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    torch.manual_seed(2147483647)  # the config's seed: the same init
    init = LectureMLP(**ckpt["hyper_parameters"]["model"]).state_dict()
    moved = torch.cat([(ckpt["state_dict"][f"net.{k}"] - v).flatten() for k, v in init.items()])
    assert float(moved.norm()) == pytest.approx(0.1 * 0.01, rel=1e-4)


def test_gradient_clipping_by_value_caps_every_element(tmp_path):
    one = ["trainer.max_steps=1", "updates_per_step=1", "trainer.val_check_interval=1", "model.hidden_dim=20"]
    run(compose_cfg(tmp_path, *one, "trainer.gradient_clip_val=0.001", "trainer.gradient_clip_algorithm=value"))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    torch.manual_seed(2147483647)
    init = LectureMLP(**ckpt["hyper_parameters"]["model"]).state_dict()
    moved = torch.cat([(ckpt["state_dict"][f"net.{k}"] - v).flatten() for k, v in init.items()])
    # lr x the clip value at most (a weight near 1 holds the difference to float32 rounding, 1.2e-7)
    assert float(moved.abs().max()) == pytest.approx(0.1 * 0.001, abs=2e-7)


def test_stock_callbacks_log_against_updates(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    lr_monitor = "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor"
    run(
        compose_cfg(
            tmp_path, "trainer.max_steps=1000", *SMALL, lr_monitor, "+callbacks.lr_monitor.logging_interval=step"
        )
    )
    steps: dict[str, list[int]] = {}
    for events in sorted(tmp_path.glob("tensorboard/events.out.tfevents*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            steps.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    # LearningRateMonitor logs before each Lightning step: updates 0, 100, ..., 900, like charmlp's own lr after it
    assert steps["lr-SGD"] == list(range(0, 1000, 100))
    assert steps["lr"] == list(range(100, 1001, 100))


def test_loss_history_survives_a_resume(tmp_path):
    run(compose_cfg(tmp_path / "a", "trainer.max_steps=1000", *SMALL))
    run(compose_cfg(tmp_path / "b", "trainer.max_steps=500", *SMALL))
    resume = f"ckpt_path={tmp_path / 'b/checkpoints/last.ckpt'}"
    run(compose_cfg(tmp_path / "c", "trainer.max_steps=1000", *SMALL, resume))
    straight, resumed = (torch.load(tmp_path / d / "checkpoints/last.ckpt", weights_only=True) for d in "ac")
    assert resumed["loss_history"] == straight["loss_history"]  # bit-identical runs log the same curves
    assert [step for step, _ in resumed["loss_history"]["val/loss"]] == [500, 1000]


def test_a_checkpoint_of_another_shape_is_refused_in_one_line(tmp_path):
    run(compose_cfg(tmp_path / "a", "trainer.max_steps=100", "model.hidden_dim=50", *SMALL))
    resume = f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}"
    with pytest.raises(CharmlpError, match=r"cannot resume with model.hidden_dim=200 \(checkpoint: 50\)"):
        run(compose_cfg(tmp_path / "b", "trainer.max_steps=200", *SMALL, resume))


def test_a_one_cycle_schedule_cannot_be_extended(tmp_path):
    run(compose_cfg(tmp_path / "a", "trainer.max_steps=200", "scheduler=onecycle", *SMALL))
    resume = f"ckpt_path={tmp_path / 'a/checkpoints/last.ckpt'}"
    with pytest.raises(CharmlpError, match=r"trainer.max_steps=400: its one-cycle schedule is planned for 200 updates"):
        run(compose_cfg(tmp_path / "b", "trainer.max_steps=400", "scheduler=onecycle", *SMALL, resume))
    assert (tmp_path / "a" / "checkpoints" / "last.ckpt").is_file()  # nothing written before is lost


@pytest.mark.parametrize("path", ["hand-written", "autograd"])
def test_lightning_that_stops_counting_updates_fails_loudly(tmp_path, monkeypatch, path):
    # the speed paths count updates through Lightning internals: the manual-optimization loop's progress counter (the
    # hand-written update, once per Lightning step) or its step hooks (autograd); were an upgrade to stop counting
    # them, global_step would never reach max_steps: the run must fail at once
    from lightning.pytorch.loops.optimization.manual import _ManualOptimization
    from lightning.pytorch.loops.progress import _Progress

    if path == "hand-written":
        monkeypatch.setattr(_Progress, "increment_by", lambda self, n: None)
    else:
        monkeypatch.setattr(_ManualOptimization, "_on_before_step", lambda self: None)
        monkeypatch.setattr(_ManualOptimization, "_on_after_step", lambda self: None)
    extra = ["fused_sgd=false"] if path == "autograd" else []
    with pytest.raises(RuntimeError, match="Lightning counted 0 of 100 updates"):
        run(compose_cfg(tmp_path, "trainer.max_steps=1000", *SMALL, *extra))


def test_installed_lightning_is_in_the_pinned_range():
    import importlib.metadata

    from packaging.requirements import Requirement

    (spec,) = [Requirement(r) for r in importlib.metadata.requires("charmlp") if r.startswith("lightning")]
    assert any(s.operator == "<" for s in spec.specifier)  # bounded: a minor release has broken internals before
    assert spec.specifier.contains(importlib.metadata.version("lightning"))


def test_float16_weights_give_finite_split_losses(tmp_path):
    # the loss summed over a 65,536-example evaluation batch is ~2e5: past float16's largest number, 65,504
    run(
        compose_cfg(
            tmp_path, "trainer.max_steps=100", "trainer.precision=16-true", "data.eval_batch_size=65536", *SMALL
        )
    )
    m = metrics(tmp_path)
    assert all(math.isfinite(m[k]) and m[k] < 20 for k in ("train/loss", "val/loss", "test/loss"))


def test_last_checkpoint_is_the_newest_state_even_without_a_new_best(tmp_path):
    """Lightning 2.6 writes save_last's file only when a new best is saved; last.ckpt must still be the newest
    state (what a resume after Ctrl-C or a longer max_steps continues from)."""
    args = ["trainer.max_steps=300", "trainer.val_check_interval=100", "updates_per_step=50"]
    args += ["experiment=lecture_bn", "model.hidden_dim=32", "model.dropout=0.2", "optimizer=adamw"]
    run(compose_cfg(tmp_path, *args))
    best, last = (torch.load(tmp_path / "checkpoints" / f, weights_only=True) for f in ("best.ckpt", "last.ckpt"))
    val = dict(last["loss_history"]["val/loss"])
    assert val[300] > val[200]  # this recipe's val gets worse at the end: no new best there
    assert best["global_step"] == 200 and last["global_step"] == 300
