"""Sweeps and DDP as a user starts them: joblib, submitit_local, two CPU processes under DDP (Optuna: test_sweeper)."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from charmlp.errors import CharmlpError

from .conftest import FAST, ROOT, run_script


def summary_rows(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def sweep(tmp_path, *args):
    """A multirun of 100-update jobs into tmp_path; it must succeed. Returns its output and summary rows."""
    result = run_script("train.py", "-m", *args, "trainer.max_steps=100", *FAST, f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    return result, summary_rows(tmp_path)


def test_joblib_runs_jobs_side_by_side_with_a_share_of_the_cores(tmp_path):
    _, rows = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "threads=2", "model.hidden_dim=20,40")
    assert len(rows) == 2
    for job in ("0", "1"):
        assert "torch threads: 1" in (tmp_path / job / "train.log").read_text()  # 2 cores / 2 jobs


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    result = run_script(
        "train.py", "-m", "data.block_size=0,2", "trainer.max_steps=100", *FAST, f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 1 and "error: 1 of 2 jobs of this sweep failed" in result.stderr, result.stderr[-2000:]
    summary = summary_rows(tmp_path)
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
    assert "weights equal on 2 ranks" in (tmp_path / "ddp" / "train.log").read_text()  # gradients were synced
    single = run_script("train.py", "data.batch_size=64", *steps, f"hydra.run.dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-2000:]
    ddp_val = json.loads((tmp_path / "ddp" / "metrics.json").read_text())["val/loss"]
    one_val = json.loads((tmp_path / "one" / "metrics.json").read_text())["val/loss"]
    assert ddp_val == pytest.approx(one_val, abs=0.05)


def test_ranks_that_end_with_different_weights_are_an_error():
    torch = pytest.importorskip("torch")
    from charmlp.cluster.ddp import check_weights_equal

    def reduce(sums, reduce_op):  # as if another rank's bias had drifted: its max is not its min
        return sums + torch.tensor([0.0, 1e-6]) if reduce_op == "max" else sums

    strategy = SimpleNamespace(reduce=reduce)
    trainer = SimpleNamespace(
        lightning_module=torch.nn.Linear(3, 1), world_size=2, is_global_zero=True, strategy=strategy
    )
    with pytest.raises(CharmlpError, match="different weights in bias"):
        check_weights_equal(trainer)


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is pid, from /proc (what `pgrep -P pid` prints)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # "pid (name) state ppid ..."
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == pid:
            children.append(int(stat.parent.name))
    return children


def wait_until(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the rank-1 process in /proc")
def test_sigterm_to_one_ddp_rank_stops_both_and_a_ddp_sweep_resumes_from_it(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "run.out"
    args = ["trainer=ddp", "trainer.max_steps=200000", "trainer.val_check_interval=100000", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    with open(out, "w") as f:  # both ranks write here (rank 1 inherits rank 0's stderr)
        main = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdout=f, stderr=f, cwd=ROOT, env=env)
    try:
        # under way: rank 0's progress bar has counted updates, so both ranks are in the training loop
        wait_until(lambda: re.search(r"\b[1-9]\d*/200000 \[", out.read_text()) or main.poll() is not None, "updates")
        assert main.poll() is None, out.read_text()[-2000:]
        (rank1,) = child_pids(main.pid)
        os.kill(rank1, signal.SIGTERM)  # the other rank gets nothing
        assert main.wait(timeout=120) == 130, out.read_text()[-2000:]
    finally:
        if main.poll() is None:  # the test failed while the run went on: end what it started
            for pid in child_pids(main.pid):
                os.kill(pid, signal.SIGKILL)
            main.kill()
            main.wait()
    assert not Path(f"/proc/{rank1}").exists()  # rank 0 waited for it
    stops = re.findall(r"SIGTERM after update (\d+)", out.read_text())
    assert len(stops) == 2 and stops[0] == stops[1], stops  # every rank stopped at the same update, knowing why
    stopped = int(stops[0])
    assert 0 < stopped < 100000 and (run_dir / "checkpoints" / "last.ckpt").is_file()  # written by the stop
    assert "weights equal on 2 ranks" in (run_dir / "train.log").read_text()

    # the resume, as a two-job DDP sweep: each job's rank 1 must run that job (its own max_steps) in step with rank 0
    sweep_dir = tmp_path / "sweep"
    last = run_dir / "checkpoints" / "last.ckpt"
    steps = f"trainer.max_steps={stopped + 200},{stopped + 300}"
    result = run_script(
        "train.py", "-m", "trainer=ddp", f"ckpt_path={last}", steps, f"hydra.sweep.dir={sweep_dir}", timeout=400
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("Launching 2 jobs") == 1 and result.stderr.count("sweep summary") == 1
    assert [r["status"] for r in summary_rows(sweep_dir)] == ["ok", "ok"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1", "multirun.yaml", "summary.csv"]
    for job, max_steps in (("0", stopped + 200), ("1", stopped + 300)):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["steps"] == max_steps
        assert sorted(p.name for p in (sweep_dir / job).glob("*.log")) == ["train.log"]  # rank 1 wrote no log
        assert "weights equal on 2 ranks" in (sweep_dir / job / "train.log").read_text()
