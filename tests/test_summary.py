"""Summaries over seeds: a sweep's summary_seeds.csv and `python -m charmlp.sweep`, on hand-made run directories."""

import csv
import io
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from charmlp.sweep.summary import SweepFailed, SweepSummary, configuration

from .conftest import ROOT

OK_50 = [  # model.hidden_dim=50 with seeds 1 and 2
    {"train/loss": 1.8, "val/loss": 2.0, "test/loss": 2.1, "val/loss_unseen": 2.5, "test/loss_unseen": 2.6},
    {"train/loss": 1.9, "val/loss": 2.2, "test/loss": 2.5, "val/loss_unseen": 2.8, "test/loss_unseen": 2.4},
]
# by hand: means 2.1, 2.3, 2.65, 2.5; sample stds sqrt(2 * d^2 / 1) for the half-differences d = 0.1, 0.2, 0.15, 0.1
STD = {"val/loss": 0.1 * math.sqrt(2), "test/loss": 0.2 * math.sqrt(2)}
STD |= {"val/loss_unseen": 0.15 * math.sqrt(2), "test/loss_unseen": 0.1 * math.sqrt(2)}
MEAN = {"val/loss": 2.1, "test/loss": 2.3, "val/loss_unseen": 2.65, "test/loss_unseen": 2.5}


def job(root: Path, name: str, overrides: list[str], metrics: dict) -> Path:
    (root / name / ".hydra").mkdir(parents=True)
    (root / name / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    (root / name / "metrics.json").write_text(json.dumps(metrics))
    return root / name


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """Five jobs: hidden 50 with seeds 1 and 2 (finished) and 3 (failed); hidden 100 with seed 1 (finished, from
    before the unseen losses) and seed 2 (pruned)."""
    sweep = tmp_path / "sweep"
    job(sweep, "0", ["seed=1", "model.hidden_dim=50"], OK_50[0])
    job(sweep, "1", ["seed=2", "model.hidden_dim=50"], OK_50[1])
    job(sweep, "2", ["seed=3", "model.hidden_dim=50"], {"error": "val/loss is nan"})
    job(sweep, "3", ["seed=1", "model.hidden_dim=100"], {"train/loss": 1.7, "val/loss": 1.9, "test/loss": 2.0})
    job(sweep, "4", ["seed=2", "model.hidden_dim=100"], {"pruned_at": 200, "val/loss": 2.4})
    return sweep


def check_groups(groups: list[dict]) -> None:
    """The two configurations, by mean val/loss, with the means and stds worked out by hand."""
    assert [(g["config"], int(g["n"]), int(g["runs"])) for g in groups] == [
        ("model.hidden_dim=100", 1, 2),
        ("model.hidden_dim=50", 2, 3),
    ]
    lone, pair = groups
    assert float(lone["val/loss mean"]) == pytest.approx(1.9) and float(lone["test/loss mean"]) == pytest.approx(2.0)
    assert lone["val/loss std"] == "" and lone["val/loss_unseen mean"] == ""  # one run; no unseen losses then
    for key in MEAN:
        assert float(pair[f"{key} mean"]) == pytest.approx(MEAN[key])
        assert float(pair[f"{key} std"]) == pytest.approx(STD[key])


def test_a_sweep_leaves_its_seed_summary_and_prints_it(sweep_dir, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    with caplog.at_level(logging.INFO, logger="charmlp"), pytest.raises(SweepFailed) as failed:
        SweepSummary().on_multirun_end(config)  # no on_multirun_start: every job counts as this sweep's
    assert failed.value.code == f"error: 1 of 5 jobs of this sweep failed; see {sweep_dir / 'summary.csv'}"
    with open(sweep_dir / "summary_seeds.csv") as f:
        check_groups(list(csv.DictReader(f)))
    table = next(r.getMessage() for r in caplog.records if "summary_seeds.csv" in r.getMessage())
    header = table.splitlines()[1]
    assert header.startswith("| config | n | runs | val/loss mean | val/loss std |") and "std" in header
    assert "| model.hidden_dim=50 | 2 | 3 | 2.1000 | 0.1414 | 2.3000 | 0.2828 | 2.6500 | 0.2121 | 2.5000 |" in table


def test_only_the_jobs_a_sweep_wrote_decide_its_exit(sweep_dir):
    """A job folder of an earlier sweep (failed, overrides.yaml untouched) is listed but does not fail this one."""
    for name in "01234":
        os.utime(sweep_dir / name / ".hydra" / "overrides.yaml", (1e9, 1e9))  # written long ago
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    callback = SweepSummary()
    callback.on_multirun_start(config)
    for name in "013":  # this sweep's jobs, finished
        path = sweep_dir / name / ".hydra" / "overrides.yaml"
        path.write_text(path.read_text())
    callback.on_multirun_end(config)
    with open(sweep_dir / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    with pytest.raises(SweepFailed):  # named by the Optuna sweeper instead: the failed one is its own
        SweepSummary().on_multirun_end(config, jobs=["1", "2"])
    SweepSummary().on_multirun_end(config, jobs=["1", "2"], stopped=True)  # a stop exits 130 by itself


def test_the_configuration_leaves_out_seeds_paths_threads_and_resumes():
    overrides = ["threads=2", "seed=7", "+seed=3", "ckpt_path=last", "paths.output_dir=x", "paths=other"]
    overrides += ["hydra.run.dir=y", "model.hidden_dim=100", "data.seed_words=3", "optimizer=adamw"]
    assert configuration(overrides) == "data.seed_words=3 model.hidden_dim=100 optimizer=adamw"


def summarise(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "charmlp.sweep", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_old_command_name_gives_the_same_tables(sweep_dir):
    new = summarise(str(sweep_dir), cwd=sweep_dir.parent)
    old = subprocess.run([sys.executable, "-m", "charmlp.summary", str(sweep_dir)], capture_output=True, text=True)
    assert new.returncode == old.returncode == 0 and old.stdout == new.stdout and "## Runs" in new.stdout


def test_the_summary_command_groups_runs_inside_and_outside_sweeps(sweep_dir):
    """A sweep directory searched for its jobs, plus a run of its own (threads, paths and resume overrides aside,
    the configuration of job 3): markdown on stdout, and the grouped table as CSV."""
    root = sweep_dir.parent
    job(root / "outputs", "run", ["threads=2", "ckpt_path=last", "model.hidden_dim=100", "seed=9"], OK_50[0])
    result = summarise("sweep", "outputs/run", cwd=root)
    assert result.returncode == 0, result.stderr
    runs, seeds = result.stdout.split("## Over the seeds")
    assert runs.startswith("## Runs\n\n| job | overrides | train/loss | val/loss | test/loss | status |")
    assert "| sweep/3 | seed=1 model.hidden_dim=100 | 1.7000 | 1.9000 | 2.0000 | ok |" in runs
    assert "| outputs/run | threads=2 ckpt_path=last model.hidden_dim=100 seed=9 | 1.8000 |" in runs
    assert "| model.hidden_dim=100 | 2 | 3 | 1.9500 | 0.0707 |" in seeds  # 1.9 and 2.0: std 0.05 * sqrt(2)
    assert "| model.hidden_dim=50 | 2 | 3 | 2.1000 | 0.1414 |" in seeds
    assert result.stderr == ""

    as_csv = summarise("sweep", "--csv", cwd=root)
    assert as_csv.returncode == 0, as_csv.stderr
    check_groups(list(csv.DictReader(io.StringIO(as_csv.stdout))))


@pytest.mark.parametrize(
    "args, message",
    [
        (["absent"], "error: absent: no such file or directory"),
        (["empty"], "error: empty: no run directory (a folder with metrics.json) in it"),
        ([], "error: the following arguments are required: DIR"),
        (["empty", "--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    result = summarise(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr


def test_the_readme_example_runs_as_printed(tmp_path):
    """The README's seed comparison, shortened only by trainer.max_steps (the commands as printed otherwise)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("one configuration over three seeds:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert commands[0][:2] == ["python", "train.py"] and commands[1][:3] == ["python", "-m", "charmlp.sweep"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    train = [sys.executable, str(ROOT / "train.py"), *commands[0][2:], "trainer.max_steps=200"]
    trained = subprocess.run(
        [*train, "trainer.val_check_interval=100"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    shown = subprocess.run(
        [sys.executable, *commands[1][1:]], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert "| 3 | 3 |" in shown.stdout  # one configuration, its three seeds finished
