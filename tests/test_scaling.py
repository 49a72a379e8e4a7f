"""Sweeps and DDP as a user starts them: Optuna, joblib, submitit_local, two CPU processes under DDP."""

import csv
import json

import pytest

from .conftest import FAST, run_script


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, *args):
    """A multirun of 100-update jobs into tmp_path; it must succeed. Returns its output and summary rows."""
    result = run_script("train.py", "-m", *args, "trainer.max_steps=100", *FAST, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    return result, summary_rows(tmp_path)


def test_optuna_sweep_leaves_a_sorted_summary(tmp_path):
    result, rows = sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    assert len(rows) == 2 and [float(r["val/loss"]) for r in rows] == sorted(float(r["val/loss"]) for r in rows)
    assert "| job | overrides |" in result.stderr  # the markdown table at the end


def test_joblib_runs_jobs_side_by_side_with_a_share_of_the_cores(tmp_path):
    _, rows = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=2", "model.hidden_dim=20,40")
    assert len(rows) == 2
    for job in ("0", "1"):
        assert "torch threads: 1" in (tmp_path / job / "train.log").read_text()  # 2 cores / 2 jobs


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    _, summary = sweep(tmp_path, "data.block_size=0,2")
    rows = {r["overrides"]: r for r in summary}
    assert (
        rows["data.block_size=2 trainer.max_steps=100 trainer.val_check_interval=100 updates_per_step=50"]["status"]
        == "ok"
    )
    failed = rows["data.block_size=0 trainer.max_steps=100 trainer.val_check_interval=100 updates_per_step=50"]
    assert failed["status"].startswith("failed: data.block_size must be at least 1")


def test_submitit_local_runs_a_two_job_sweep(tmp_path):
    _, rows = sweep(tmp_path, "hydra/launcher=submitit_local", "model.hidden_dim=20,40")
    assert len(rows) == 2


def test_ddp_on_two_cpu_processes_matches_one_process_with_the_doubled_batch(tmp_path):
    steps = ["trainer.max_steps=2000", "trainer.val_check_interval=1000", "model.init=scaled"]
    ddp = run_script(
        "train.py",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *steps,
        f"hydra.run.dir={tmp_path / 'ddp'}",
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.json")) == ["metrics.json"]
    assert not (tmp_path / "ddp" / "1").exists()  # rank 1 made no run directory of its own
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.log")) == ["train.log"]  # nor a log file
    single = run_script("train.py", "data.batch_size=64", *steps, f"hydra.run.dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp_val = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["val/loss"]
    one_val = json.loads((tmp_path / "one" / "metrics.json").read_text())["val/loss"]
    assert ddp_val == pytest.approx(one_val, abs=0.05)
