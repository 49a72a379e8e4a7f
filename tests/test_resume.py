"""Resume semantics (training.resume, training.placement.RunPlacement, the datamodule's streams): what a
checkpoint fixes, what a resume may change, and that every allowed path ends where the run that never stopped ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from charmlp.errors import CharmlpError
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.resume import carry_over, check_resume
from charmlp.training.run import run

from .conftest import ROOT, compose_cfg, run_script

SMALL = ["trainer.val_check_interval=100", "updates_per_step=50", "threads=1"]


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def one_line_error(result) -> str:
    """The refusal a user sees: exit 2, one `error:` line on stderr, no traceback, nothing on stdout."""
    assert result.returncode == 2, result.stderr[-1500:]
    assert "Traceback" not in result.stderr and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-1500:]
    return errors[0]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """200 updates of the lecture's model through train.py (validations at 100 and 200)."""
    run_dir = tmp_path_factory.mktemp("resume") / "base"
    result = run_script("train.py", "trainer.max_steps=200", "seed=4", *SMALL, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path, name: str = "copy") -> Path:
    shutil.copytree(run_dir, tmp_path / name)
    return tmp_path / name


# --- what a checkpoint fixes: refused before anything is written ------------------------------------------------


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optimizer.lr=0.05", "optimizer.lr=0.05 (checkpoint: 0.1)"),
        ("optimizer.weight_decay=0.01", "optimizer.weight_decay=0.01 (checkpoint: 0.0)"),
        ("scheduler.milestones=[150]", "scheduler.milestones=[150] (checkpoint: [100000])"),
        ("scheduler=constant", "scheduler=ConstantLR (checkpoint: MultiStepLR)"),
        ("seed=5", "seed=5 (checkpoint: 4)"),
        ("data.batch_size=64", "data.batch_size=64 (checkpoint: 32)"),
        ("model.hidden_dim=100", "model.hidden_dim=100 (checkpoint: 200)"),
    ],
)
def test_a_changed_recipe_is_refused_in_one_line(base_run, tmp_path, override, named):
    run_dir = copy_of(base_run, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_script(
        "train.py", "trainer.max_steps=400", "seed=4", *SMALL, override, f"ckpt_path={run_dir}/checkpoints/last.ckpt"
    )
    assert named in one_line_error(result)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # resumed in place: untouched


def test_other_words_are_refused(base_run, tmp_path):
    """The same letters, other words (here: the same file split by another seed) is another run's data."""
    run_dir = copy_of(base_run, tmp_path)
    result = run_script(
        "train.py",
        "trainer.max_steps=400",
        "seed=4",
        *SMALL,
        "data.split_seed=1",
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
    )
    assert "was trained on other words than data.path" in one_line_error(result)


def test_max_steps_not_beyond_the_checkpoint_is_refused(base_run, tmp_path):
    run_dir = copy_of(base_run, tmp_path)
    result = run_script(
        "train.py", "trainer.max_steps=200", "seed=4", *SMALL, f"ckpt_path={run_dir}/checkpoints/last.ckpt"
    )
    assert "is at update 200 already: raise trainer.max_steps above 200" in one_line_error(result)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign", "directory"])
def test_broken_or_foreign_checkpoints_are_one_line(base_run, tmp_path, damage):
    good = (base_run / "checkpoints" / "best.ckpt").read_bytes()
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "flipped":
        bad.write_bytes(good[:5000] + bytes(b ^ 0xFF for b in good[5000:5400]) + good[5400:])
    elif damage == "foreign":
        torch.save({"weights": torch.zeros(3)}, bad)
    else:
        bad = tmp_path
    result = run_script(
        "train.py", "trainer.max_steps=400", *SMALL, f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    line = one_line_error(result)
    assert str(bad) in line and ("checkpoint" in line or "directory" in line)
    assert not (tmp_path / "r").exists()  # refused before Hydra wrote the run directory


def test_another_runs_directory_is_refused_and_left_alone(base_run, tmp_path):
    run_dir = copy_of(base_run, tmp_path)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_script("train.py", "trainer.max_steps=100", *SMALL, f"hydra.run.dir={run_dir}")
    assert "already holds a run" in one_line_error(result)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before  # config, log, events too


# --- what a resume may change: the same numbers as the run that never stopped ---------------------------------------


def test_resume_in_place_continues_the_runs_directory_as_if_never_stopped(base_run, tmp_path):
    whole = tmp_path / "whole"
    result = run_script("train.py", "trainer.max_steps=400", "seed=4", *SMALL, f"hydra.run.dir={whole}")
    assert result.returncode == 0, result.stderr[-1500:]
    run_dir = copy_of(base_run, tmp_path)
    result = run_script("train.py", "trainer.max_steps=400", "seed=4", *SMALL, "ckpt_path=last", cwd=tmp_path)
    # ckpt_path=last takes the newest last.ckpt under ./outputs: there is none, so name it
    assert result.returncode == 2 and "no run under ./outputs" in result.stderr
    result = run_script(
        "train.py",
        "trainer.max_steps=400",
        "seed=4",
        *SMALL,
        f"ckpt_path={run_dir}/checkpoints/last.ckpt",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-1500:]
    assert not (tmp_path / "outputs").exists()  # nothing written anywhere else
    m, w = metrics(run_dir), metrics(whole)
    for key in ("train/loss", "val/loss", "test/loss", "val/loss_unseen", "test/loss_unseen", "steps"):
        assert m[key] == w[key], key
    assert "200 updates in" in result.stderr and "the whole run: 400 updates" in result.stderr
    assert result.stderr.count("resuming from") == 1
    assert "dirpath has changed" not in result.stderr and "multiple `ModelCheckpoint`" not in result.stderr
    log = (run_dir / "train.log").read_text()
    assert log.count("torch threads") == 2  # train.log goes on: both processes' lines
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["ckpt_path"] == str(run_dir / "checkpoints" / "last.ckpt") and config["trainer"]["max_steps"] == 400


def test_updates_per_step_may_change_and_validation_stays_on_its_updates(tmp_path):
    """100 updates per Lightning step before the stop, 25 after: validations still every 200 updates, and every
    number as in the run that never stopped."""
    common = ["trainer.val_check_interval=200", "threads=1", "seed=7"]
    run(compose_cfg(tmp_path / "whole", "trainer.max_steps=800", "updates_per_step=100", *common))
    run(compose_cfg(tmp_path / "r", "trainer.max_steps=400", "updates_per_step=100", *common))
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    module_history = torch.load(last, weights_only=True)["loss_history"]["val/loss"]
    assert [step for step, _ in module_history] == [200, 400]
    resumed = tmp_path / "r2"
    run(compose_cfg(resumed, "trainer.max_steps=800", "updates_per_step=25", *common, f"ckpt_path={last}"))
    history = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["loss_history"]["val/loss"]
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)["loss_history"]["val/loss"]
    assert history == whole  # validated at 200, 400, 600, 800 with the same losses
    assert metrics(resumed)["val/loss"] == metrics(tmp_path / "whole")["val/loss"]


def test_check_resume_in_process_refuses_what_train_py_refuses(base_run, tmp_path):
    run_dir = copy_of(base_run, tmp_path)
    cfg = compose_cfg(tmp_path / "x", "trainer.max_steps=400", "seed=4", "optimizer.lr=0.2", *SMALL)
    with pytest.raises(CharmlpError, match=r"optimizer\.lr=0\.2 \(checkpoint: 0\.1\)"):
        check_resume(cfg, run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(CharmlpError, match="optimizer.lr=0.2"):  # run(cfg) for its other callers (tests, sweeps)
        run(
            compose_cfg(
                tmp_path / "y",
                "trainer.max_steps=400",
                "seed=4",
                "optimizer.lr=0.2",
                *SMALL,
                f"ckpt_path={run_dir}/checkpoints/last.ckpt",
            )
        )


# --- another world size: distinct streams, the same on every such resume -----------------------------------------


def _module_for(words: Path, world_size: int, rank: int, step: int) -> NamesDataModule:
    dm = NamesDataModule(str(words), batch_size=4, seed=3)
    dm.setup()
    dm.trainer = SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        global_step=step,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )
    return dm


def test_one_process_checkpoint_under_two_ranks_draws_distinct_reproducible_streams(tiny_words, caplog):
    saved_dm = _module_for(tiny_words, 1, 0, 0)
    sampler = next(iter(saved_dm.train_dataloader()))
    sampler.draw(5)
    state = saved_dm.state_dict()
    one_process_next = sampler.draw(3)[1]

    def first_draws(world_size: int, rank: int) -> torch.Tensor:
        dm = _module_for(tiny_words, world_size, rank, 5)
        dm.load_state_dict(state)
        return next(iter(dm.train_dataloader())).draw(3)[1]

    with caplog.at_level("WARNING", logger="charmlp"):
        rank0, rank1 = first_draws(2, 0), first_draws(2, 1)
    assert torch.equal(first_draws(1, 0), one_process_next)  # the same world size continues the saved stream
    assert not torch.equal(rank0, rank1)  # the ranks do not replay one stream
    assert not torch.equal(rank0, one_process_next) and not torch.equal(rank1, one_process_next)
    assert torch.equal(rank0, first_draws(2, 0)) and torch.equal(rank1, first_draws(2, 1))  # reproducible
    assert "written by 1 process(es), this run has 2" in caplog.text


def test_two_rank_checkpoint_restores_each_ranks_own_stream(tiny_words):
    states = []
    for rank in (0, 1):
        dm = _module_for(tiny_words, 2, rank, 0)
        sampler = next(iter(dm.train_dataloader()))
        sampler.draw(2)
        states.append((dm._generator.get_state(), sampler.draw(2)[1]))
    state = {"generator": states[0][0], "generators": [s for s, _ in states], "world_size": 2}
    for rank in (0, 1):
        dm = _module_for(tiny_words, 2, rank, 2)
        dm.load_state_dict(state)
        assert torch.equal(next(iter(dm.train_dataloader())).draw(2)[1], states[rank][1])


# --- a resume into another directory takes its best checkpoint along ---------------------------------------------


def test_carry_over_moves_the_best_checkpoint_and_its_score(tmp_path):
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    old.mkdir(parents=True)
    (old / "best.ckpt").write_bytes(b"best")
    (old / "last.ckpt").write_bytes(b"last")
    state = {
        "dirpath": str(old),
        "best_model_path": str(old / "best.ckpt"),
        "best_model_score": 2.5,
        "kth_best_model_path": str(old / "best.ckpt"),
        "best_k_models": {str(old / "best.ckpt"): 2.5},
        "last_model_path": str(old / "last.ckpt"),
    }
    carry_over(state, str(new), copy=True)
    assert state["dirpath"] == str(new) and state["best_model_score"] == 2.5
    assert state["best_model_path"] == str(new / "best.ckpt") and state["best_k_models"] == {
        str(new / "best.ckpt"): 2.5
    }
    assert (new / "best.ckpt").read_bytes() == b"best" and (old / "best.ckpt").read_bytes() == b"best"


def test_resume_into_a_new_directory_keeps_the_runs_best(base_run, tmp_path):
    """A branch into a new directory: its metrics are the whole run's best, not only the part
    after the resume (Lightning alone would forget the best score when the directory changes)."""
    result = run_script(
        "train.py",
        "trainer.max_steps=300",
        "seed=4",
        *SMALL,
        f"ckpt_path={base_run}/checkpoints/last.ckpt",
        f"hydra.run.dir={tmp_path / 'branch'}",
    )
    assert result.returncode == 0, result.stderr[-1500:]
    ckpt = torch.load(tmp_path / "branch" / "checkpoints" / "best.ckpt", weights_only=True)
    state = next(v for k, v in ckpt["callbacks"].items() if "val/loss" in k)
    assert state["dirpath"] == str(tmp_path / "branch" / "checkpoints")
    history = ckpt["loss_history"]["val/loss"]
    assert [s for s, _ in history] == [100, 200, 300][: len(history)] and metrics(tmp_path / "branch")[
        "val/loss"
    ] == min(v for _, v in history)
    assert "dirpath has changed" not in result.stderr


# --- values the config records are the values used -----------------------------------------------------------------


def test_onecycle_leaves_plain_sgd_plain_and_best_says_it_cycles(tmp_path):
    run(compose_cfg(tmp_path, "scheduler=onecycle", "trainer.max_steps=200", *SMALL))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["momentum"] == 0
    best = compose_cfg(tmp_path / "b", "experiment=best")
    assert best.scheduler.cycle_momentum is True and best.scheduler.base_momentum == 0.85


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["seed=-1"], "seed must be between 0 and 4294967295"),
        (["+trainer.fast_dev_run=true"], "trainer.fast_dev_run is not supported"),
        (["optimizer.weight_decay=-0.1"], "Invalid weight_decay value: -0.1"),
        (["model=wavenet", "data.block_size=6"], "data.block_size must be a power of two"),
        (["model=wavenet", "model.levels=2"], "set data.block_size=4 (it is 8)"),
    ],
)
def test_impossible_values_name_the_fix(tmp_path, args, named):
    result = run_script("train.py", "trainer.max_steps=100", *SMALL, *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert named in one_line_error(result)


def test_readme_resume_table_names_what_is_fixed():
    text = (ROOT / "README.md").read_text()
    assert "### Resuming" in text and "fixed by the checkpoint" in text


class DoubleCtrlC:
    """A callback (importable by train.py through +callbacks.x._target_) that presses Ctrl-C twice mid-run."""

    def __new__(cls):
        import lightning as L

        class Press(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 150:
                    os.kill(os.getpid(), signal.SIGINT)  # GracefulStop notes it
                    os.kill(os.getpid(), signal.SIGINT)  # the second aborts at once

        return Press()


def test_a_second_ctrl_c_exits_130_in_one_line_not_1(tmp_path):
    """Lightning turns the second KeyboardInterrupt into exit(1); a sweep would count the run failed, not stopped."""
    result = run_script(
        "train.py",
        "trainer.max_steps=400",
        *SMALL,
        "+callbacks.press._target_=tests.test_resume.DoubleCtrlC",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 130, result.stderr[-1500:]
    assert "SIGINT twice: stopped at once" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # the validation at update 100 wrote it


def test_one_process_checkpoint_resumed_under_ddp_trains_each_rank_on_its_own_stream(base_run, tmp_path):
    run_dir = copy_of(base_run, tmp_path)
    ckpt = f"ckpt_path={run_dir}/checkpoints/last.ckpt"
    one = run_script("train.py", "trainer.max_steps=400", "seed=4", *SMALL, ckpt, f"hydra.run.dir={tmp_path / 'one'}")
    ddp = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.max_steps=400",
        "seed=4",
        *SMALL,
        ckpt,
        f"hydra.run.dir={tmp_path / 'ddp'}",
        timeout=400,
    )
    assert one.returncode == 0 and ddp.returncode == 0, ddp.stderr[-2000:]
    assert metrics(tmp_path / "ddp")["val/loss"] != metrics(tmp_path / "one")["val/loss"]
    assert "written by 1 process(es), this run has 2" in ddp.stderr and "weights equal on 2 ranks" in ddp.stderr


def test_two_rank_run_stopped_and_resumed_on_two_ranks_ends_as_never_stopped(tmp_path):
    """Each rank's saved stream restored on its own rank: the same losses as the 2-rank run that never stopped."""
    ddp = ["trainer=ddp", "seed=4", *SMALL]
    whole = run_script("train.py", *ddp, "trainer.max_steps=400", f"hydra.run.dir={tmp_path / 'whole'}", timeout=400)
    part = run_script("train.py", *ddp, "trainer.max_steps=200", f"hydra.run.dir={tmp_path / 'part'}", timeout=400)
    assert whole.returncode == 0 and part.returncode == 0, whole.stderr[-1500:] + part.stderr[-1500:]
    ckpt = f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"
    rest = run_script("train.py", *ddp, "trainer.max_steps=400", ckpt, timeout=400)
    assert rest.returncode == 0, rest.stderr[-1500:]
    m, w = metrics(tmp_path / "part"), metrics(tmp_path / "whole")
    for key in ("train/loss", "val/loss", "test/loss", "steps"):
        assert m[key] == w[key], key
    assert "process(es)" not in rest.stderr  # the saved streams continued: no reseeding
