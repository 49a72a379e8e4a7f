"""Every documented option with every other: an all-pairs matrix of tiny runs that train, resume, sample and score.

Each row composes the config as train.py would, trains 200 updates at a tiny size, resumes the checkpoint to 300
updates, and samples and scores from the result with sample.py's code. The rows are an all-pairs selection: every
value of every factor meets every value of every other factor in some row (test_rows_cover_every_pair holds that).
DDP rows run as processes, since Lightning starts the other rank by re-running the script.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from charmlp.errors import CharmlpError
from charmlp.sampling.cli import main as sample_main
from charmlp.training.run import run

from .conftest import ROOT, compose_cfg, run_script

# factor -> its values, each a list of overrides; the first value of each factor is the default
FACTORS: dict[str, dict[str, list[str]]] = {
    "experiment": {name: [f"experiment={name}"] for name in ("lecture", "bigger_hidden", "best_mlp")},
    "optimizer": {"sgd": ["optimizer=sgd"], "adamw": ["optimizer=adamw"]},
    "scheduler": {
        # a milestone inside the run, and a one-cycle planned past the first run's end so that the resume fits
        "step": ["scheduler=step", "scheduler.milestones=[150]"],
        "onecycle": ["scheduler=onecycle", "scheduler.total_steps=300"],
        "constant": ["scheduler=constant"],
    },
    "precision": {p: [f"trainer.precision={p}"] for p in ("32-true", "bf16-mixed", "bf16-true")},
    "trainer": {"default": ["trainer=default"], "cpu": ["trainer=cpu"]},
    "init": {i: [f"model.init={i}"] for i in ("normal", "scaled")},
    "dropout": {d: [f"model.dropout={d}"] for d in ("0.0", "0.2")},
    "num_hidden": {n: [f"model.num_hidden={n}"] for n in ("1", "2")},
    "clip": {
        "none": [],
        "norm": ["trainer.gradient_clip_val=1.0"],
        "value": ["trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value"],
    },
    "fused_sgd": {f: [f"fused_sgd={f}"] for f in ("true", "false")},
    "logger": {"tensorboard": ["logger=tensorboard"], "none": ["~logger"]},
}
# tiny and quick whatever the experiment says; the values every row shares
TINY = ["model.hidden_dim=24", "data.batch_size=16", "data.eval_batch_size=4096", "threads=1"]
TINY += ["updates_per_step=50", "trainer.val_check_interval=100", "diagnostics.every=70"]  # readings mid-step


def all_pairs(factors: dict[str, list[str]]) -> list[dict[str, str]]:
    """Rows (factor -> value) in which every pair of values of two factors appears at least once (greedy).

    The first row takes every factor's first value; each next row starts from the smallest uncovered pair.
    """
    names = list(factors)

    def pairs(row: dict[str, str]) -> set[tuple[str, str, str, str]]:
        return {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2) if a in row and b in row}

    todo = {(a, va, b, vb) for a, b in itertools.combinations(names, 2) for va in factors[a] for vb in factors[b]}
    rows = [{name: values[0] for name, values in factors.items()}]  # the defaults: the lecture's fast path
    todo -= pairs(rows[0])
    while todo:
        a, va, b, vb = min(todo)  # deterministic: the same rows every run
        row = {a: va, b: vb}
        for name in names:
            if name not in row:  # the value that covers the most pairs still missing
                row[name] = max(factors[name], key=lambda v: len(pairs({**row, name: v}) & todo))
        rows.append({name: row[name] for name in names})
        todo -= pairs(row)
    return rows


ROWS = all_pairs({name: list(values) for name, values in FACTORS.items()})

# the layer families (batch norm, WaveNet) with the options that change what their layers compute; init,
# num_hidden and fused_sgd are the MLP's own, and clipping, trainer and logger run the same code for every family
FAMILY_FACTORS = {
    "experiment": {name: [f"experiment={name}"] for name in ("lecture_bn", "lecture_wavenet")},
    **{name: FACTORS[name] for name in ("optimizer", "scheduler", "precision", "dropout")},
    "fold": {f: [f"model.fold_embedding={f}"] for f in ("false", "true")},  # experiment=best_mlp's MLP folds too
}
FAMILY_ROWS = all_pairs({name: list(values) for name, values in FAMILY_FACTORS.items()})


def overrides(row: dict[str, str]) -> list[str]:
    values = {name: FACTORS.get(name, {}) | FAMILY_FACTORS.get(name, {}) for name in FACTORS | FAMILY_FACTORS}
    return [o for name, value in row.items() for o in values[name][value]] + TINY


def row_id(row: dict[str, str]) -> str:
    return "-".join(v for v in row.values())


@pytest.fixture(scope="module")
def words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 of the bundled names: the real alphabet, a fraction of the evaluation time."""
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join((ROOT / "data" / "names.txt").read_text().split()[::16]) + "\n")
    return path


@pytest.mark.parametrize("factors,rows", [(FACTORS, ROWS), (FAMILY_FACTORS, FAMILY_ROWS)], ids=["mlp", "families"])
def test_rows_cover_every_pair(factors, rows):
    covered = {(a, row[a], b, row[b]) for row in rows for a, b in itertools.combinations(factors, 2)}
    wanted = {(a, va, b, vb) for a, b in itertools.combinations(factors, 2) for va in factors[a] for vb in factors[b]}
    assert covered == wanted
    assert len(rows) <= 16  # a matrix that grows past this costs CI minutes: rethink the factors


def check_samples_and_scores(ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    """sample.py's code reads the checkpoint, prints 4 names and scores two words, only data on stdout."""
    capsys.readouterr()
    assert sample_main([f"ckpt={ckpt}", "n=4", "seed=0"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert len(names) == 4 and all(set(n) <= set("abcdefghijklmnopqrstuvwxyz") for n in names), names
    assert sample_main([f"ckpt={ckpt}", "score=[emma,olivia]", "format=json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert [s["word"] for s in scored] == ["emma", "olivia"] and all(math.isfinite(s["nll"]) for s in scored)


@pytest.mark.parametrize("row", ROWS + FAMILY_ROWS, ids=row_id)
def test_row_trains_resumes_samples_and_scores(row, words, tmp_path, capsys):
    args = [f"data.path={words}", *overrides(row)]
    val = run(compose_cfg(tmp_path / "a", *args, "trainer.max_steps=200"))
    assert math.isfinite(val)
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    run(compose_cfg(tmp_path / "b", *args, "trainer.max_steps=300", f"ckpt_path={last}"))
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["steps"] == 300 and all(math.isfinite(metrics[k]) for k in ("train/loss", "val/loss", "test/loss"))
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 300
    assert [step for step, _ in resumed["loss_history"]["train/loss"]] == list(range(50, 301, 50))  # all of it
    assert any((tmp_path / "b").glob("tensorboard/events.*")) == (row.get("logger", "tensorboard") == "tensorboard")
    check_samples_and_scores(tmp_path / "b" / "checkpoints" / "best.ckpt", capsys)


@pytest.mark.parametrize("experiment", [*FACTORS["experiment"], *FAMILY_FACTORS["experiment"]])
def test_lr_find_with_each_experiment(experiment, words, tmp_path):
    # best brings AdamW, dropout and the scaled init: lr_find takes the configured optimizer and model as they are
    cfg = compose_cfg(tmp_path, f"experiment={experiment}", f"data.path={words}", *TINY, "lr_find_steps=60")
    cfg.mode = "lr_find"
    lr = run(cfg)
    assert 1e-3 / 10**0.5 <= lr <= 1 and (tmp_path / "lr_find.png").is_file()


# DDP: each row is two processes started by train.py; 4 rows give trainer=ddp every value of every other factor
DDP_ROWS = [
    {name: list(values)[i % len(values)] for name, values in FACTORS.items() if name != "trainer"} for i in range(4)
]


@pytest.mark.parametrize("row", DDP_ROWS, ids=row_id)
def test_ddp_row_trains_resumes_samples_and_scores(row, words, tmp_path, capsys):
    args = [f"data.path={words}", *overrides(row)]
    result = run_script(
        "train.py", *args, "trainer=ddp", "trainer.max_steps=200", f"hydra.run.dir={tmp_path / 'a'}", timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "" and "weights equal on 2 ranks" in result.stderr
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # a two-process checkpoint resumes in one process (each rank's generator is in it; rank 0's goes on)
    run(compose_cfg(tmp_path / "b", *args, "trainer.max_steps=300", f"ckpt_path={last}"))
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["steps"] == 300
    check_samples_and_scores(tmp_path / "b" / "checkpoints" / "best.ckpt", capsys)


def test_ddp_rows_cover_every_value():
    for name, values in FACTORS.items():
        assert name == "trainer" or {row[name] for row in DDP_ROWS} == set(values), name


def test_ddp_ranks_end_with_equal_running_statistics(words, tmp_path):
    """Each rank's batch norm sees its own batches; the running statistics are averaged over the ranks after
    every Lightning step, and the check after training compares every parameter and buffer across the ranks."""
    args = [f"data.path={words}", "experiment=lecture_wavenet", *TINY, "trainer=ddp", "trainer.max_steps=200"]
    result = run_script("train.py", *args, f"hydra.run.dir={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weights equal on 2 ranks (running statistics too)" in result.stderr
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not torch.equal(state["net.layers.3.running_var"], torch.ones(24))  # they moved


def test_gpu_trainer_without_a_gpu_is_one_line(words, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(CharmlpError, match="^trainer: No supported gpu backend found.*trainer=default"):
        run(compose_cfg(tmp_path, "trainer=gpu", f"data.path={words}", *TINY, "trainer.max_steps=100"))
