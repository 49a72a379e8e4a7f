"""Slurm: the launcher's defaults and pieces by hand, then (mark `slurm`) a real single-node cluster from
scripts/slurm_local.sh: a sweep, a DDP job of two srun tasks, jobs preempted or requeued that resume exactly, and a
cancelled job that becomes a failed row. The cluster tests skip, saying why, where no cluster can be started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from charmlp.cluster import slurm
from charmlp.errors import CharmlpError
from charmlp.training.callbacks import GracefulStop
from charmlp.training.config import slurm_gpus, slurm_tasks

from .conftest import FAST, ROOT, compose_cfg
from .test_scaling import summary_rows


@pytest.mark.parametrize(("devices", "tasks"), [(1, 1), (2, 2), ("3", 3), ([0, 1], 2), ("auto", 1), (-1, 1)])
def test_one_slurm_task_per_device(devices, tasks):
    assert slurm_tasks(devices) == tasks


def test_gpus_are_asked_only_for_gpu_trainers():
    assert slurm_gpus("gpu", 2) == 2 and slurm_gpus("cuda", 1) == 1
    assert slurm_gpus("auto", 2) is None and slurm_gpus("cpu", 1) is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], {"tasks_per_node": 1, "gpus_per_node": None, "cpus_per_task": 1, "nodes": 1, "partition": None}),
        (["trainer=ddp", "threads=2"], {"tasks_per_node": 2, "gpus_per_node": None, "cpus_per_task": 2}),
        (
            ["trainer=ddp", "trainer.accelerator=gpu", "trainer.num_nodes=2"],
            {"tasks_per_node": 2, "gpus_per_node": 2, "nodes": 2},
        ),
        (["trainer=gpu"], {"tasks_per_node": 1, "gpus_per_node": 1}),
        (["hydra.launcher.partition=gpu"], {"partition": "gpu"}),
    ],
)
def test_launcher_defaults_follow_the_trainer(tmp_path, monkeypatch, overrides, expected):
    monkeypatch.delenv("SBATCH_PARTITION", raising=False)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    compose_cfg(tmp_path)  # registers the resolvers
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.charmlp_slurm.slurm_launcher.SlurmLauncher"
    assert {key: launcher[key] for key in expected} == expected


def test_partition_and_account_come_from_sbatch_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SBATCH_PARTITION", "short")
    monkeypatch.setenv("SBATCH_ACCOUNT", "lab")
    from hydra import compose, initialize_config_dir

    compose_cfg(tmp_path)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert (cfg.hydra.launcher.partition, cfg.hydra.launcher.account) == ("short", "lab")


def test_queue_watcher_reads_squeue_and_takes_a_job_it_no_longer_lists_as_ended():
    from charmlp.cluster.slurm_launcher import QueueWatcher

    watcher = QueueWatcher()
    for job in ("7_0", "7_1", "8"):
        watcher.register_job(job)
    watcher.register_job("9")
    info = watcher.read_info(b"7_0|CONFIGURING|vm\n7_1|REQUEUE_HOLD|\n9|CANCELLED|vm\n")
    assert info["7_0"]["State"] == "RUNNING" and info["7_1"]["State"] == "PENDING"  # states submitit knows
    assert info["9"]["State"] == "CANCELLED"
    assert info["8"]["State"] == "ENDED"  # finished long enough ago that squeue forgot it
    watcher._info_dict.update(info)
    assert not watcher.is_done("7_0", mode="cache") and not watcher.is_done("7_1", mode="cache")
    assert watcher.is_done("8", mode="cache") and watcher.is_done("9", mode="cache")


def test_a_requeued_job_resumes_from_its_own_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    (tmp_path / "checkpoints").mkdir()
    assert slurm.resume_checkpoint(tmp_path) is None  # no checkpoint yet
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert slurm.resume_checkpoint(tmp_path) is None  # a first start: as configured
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert slurm.resume_checkpoint(tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """`scontrol` on PATH that records its arguments and fails as a job that cannot be requeued does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\necho "scontrol: error: Job is not requeueable" >&2\nexit 1\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    return tmp_path / "calls"


def test_only_rank_zero_requeues_and_a_refusal_is_one_line(fake_scontrol, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    slurm.requeue()
    assert not fake_scontrol.exists()
    monkeypatch.setenv("SLURM_PROCID", "0")
    with pytest.raises(CharmlpError, match=r"^could not requeue Slurm job 42: scontrol: error: Job is not requeueable"):
        slurm.requeue()
    assert fake_scontrol.read_text() == "requeue 42\n"


def test_usr1_outside_training_requeues_as_submitits_usr2_does(monkeypatch):
    monkeypatch.setattr(slurm, "in_job", lambda: True)

    def submitits(signum, frame):  # stands for submitit's checkpoint-and-requeue handler
        pass

    before = {sig: signal.signal(sig, h) for sig, h in ((signal.SIGUSR1, signal.SIG_DFL), (signal.SIGUSR2, submitits))}
    try:
        slurm.warning_outside_training()
        assert signal.getsignal(signal.SIGUSR1) is submitits
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGUSR2])
def test_in_a_slurm_job_the_warning_signal_stops_training_for_a_requeue(monkeypatch, sig):
    monkeypatch.setattr(slurm, "in_job", lambda: True)
    stop, trainer = GracefulStop(), SimpleNamespace(world_size=1, should_stop=False)
    before = signal.getsignal(sig)
    stop.on_train_start(trainer, None)
    try:
        os.kill(os.getpid(), sig)
        stop.on_train_batch_end(trainer, None)
    finally:
        stop.on_train_end(trainer, None)
    assert trainer.should_stop and stop.requeue and stop.signal_name == sig.name
    assert signal.getsignal(sig) is before  # Slurm's (or submitit's) handling again once training is over


def test_outside_slurm_the_user_signals_are_left_alone(monkeypatch):
    monkeypatch.setattr(slurm, "in_job", lambda: False)
    stop = GracefulStop()
    before = signal.getsignal(signal.SIGUSR1)
    stop.on_train_start(SimpleNamespace(world_size=1), None)
    try:
        assert signal.getsignal(signal.SIGUSR1) is before
    finally:
        stop.on_train_end(SimpleNamespace(world_size=1, should_stop=False), None)


def test_a_trial_job_reports_through_files_and_gets_the_sweeps_verdicts(tmp_path):
    import threading

    from charmlp.cluster.slurm_launcher import FileReporter, ReportRelay

    heard = []

    def sweeper(update, val_loss):  # prunes from update 200 on
        heard.append((update, val_loss))
        return update >= 200

    relay = ReportRelay(tmp_path / "trial_3", sweeper)
    reporter, verdicts = FileReporter(tmp_path / "trial_3"), []
    job = threading.Thread(target=lambda: verdicts.extend(reporter(u, v) for u, v in ((100, 2.5), (200, 2.25))))
    job.start()
    while job.is_alive():
        relay.answer()
        job.join(0.05)
    assert verdicts == [False, True] and heard == [(100, 2.5), (200, 2.25)]
    assert (tmp_path / "trial_3" / "reports.jsonl").read_text() == "[100, 2.5]\n[200, 2.25]\n"
    assert (tmp_path / "trial_3" / "verdicts").read_text() == "go\nprune\n"


def test_a_trial_job_whose_sweep_is_silent_trains_on_without_waiting_again(tmp_path):
    from charmlp.cluster.slurm_launcher import FileReporter, ReportRelay

    ReportRelay(tmp_path, lambda update, val: True)  # the files, but nobody answers
    reporter = FileReporter(tmp_path, patience_s=0.3)
    assert reporter(100, 2.5) is False and reporter.patience_s == 0
    (tmp_path / "verdicts").write_text("go\nprune\n")  # a late sweep still counts
    assert reporter(200, 2.4) is True


def test_a_pruned_run_comes_back_from_its_job_as_it_left():
    import pickle

    from charmlp.errors import Pruned

    back = pickle.loads(pickle.dumps(Pruned(300, 2.5)))
    assert (back.update, back.val_loss, str(back)) == (300, 2.5, "pruned at update 300 (val/loss 2.5000)")


# ---- a real cluster ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster() -> dict[str, str]:
    """The environment to submit with: the cluster SLURM_CONF names when it answers, else one from
    scripts/slurm_local.sh up (stopped again at the end if this fixture started it)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    if env.get("SLURM_CONF") and _sinfo(env):
        yield env
        return
    if os.geteuid() != 0:
        pytest.skip("no Slurm cluster: SLURM_CONF is unset and scripts/slurm_local.sh up needs root")
    up = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_local.sh"), "up"], capture_output=True, text=True, timeout=600
    )
    if up.returncode != 0 or "SLURM_CONF=" not in up.stdout:
        pytest.skip(f"no Slurm cluster: scripts/slurm_local.sh up failed: {up.stderr.strip().splitlines()[-1:]}")
    env["SLURM_CONF"] = up.stdout.strip().split("SLURM_CONF=", 1)[1]
    yield env
    if "slurm_local.sh: node" in up.stderr:  # it was started here
        subprocess.run(["bash", str(ROOT / "scripts/slurm_local.sh"), "down"], capture_output=True, timeout=120)


def _sinfo(env: dict[str, str]) -> bool:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip().startswith(("idle", "mix", "alloc"))


def _train(env, *args, background=False):
    command = [sys.executable, str(ROOT / "train.py"), *args]
    if background:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _slurm_sweep(env, sweep_dir, *args):
    """A multirun on the cluster into sweep_dir; it must succeed."""
    result = _train(env, "-m", "hydra/launcher=slurm", *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _slurm(env, *args) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def _job_id(sweep_dir: Path) -> str:
    """The Slurm job of a one-job sweep, from submitit's folder for it (named by the job id)."""
    found = _wait_for(lambda: [p.name for p in (sweep_dir / ".submitit").glob("*") if p.name.isdigit()])
    return found[0]


def _wait_for(probe, what="", seconds=240):
    """Poll `probe` (a file appearing, a job changing state) until it gives something; no fixed sleeps."""
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"waited {seconds} s for {what or probe}")


def _logs(sweep_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sweep_dir.rglob("*") if p.suffix in (".log", ".err"))


@pytest.mark.slurm
def test_slurm_local_up_is_idempotent(cluster):
    again = subprocess.run(
        ["bash", str(ROOT / "scripts/slurm_local.sh"), "up"], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and again.stdout.strip() == f"export SLURM_CONF={cluster['SLURM_CONF']}"


@pytest.mark.slurm
def test_a_sweep_runs_as_slurm_jobs_with_their_own_run_directories(cluster, tmp_path):
    result = _slurm_sweep(cluster, tmp_path, "model.hidden_dim=20,40", "trainer.max_steps=100", *FAST)
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "metrics.json").read_text())["steps"] == 100
        assert "torch threads: 1" in (tmp_path / job / "train.log").read_text()
    (submission,) = (tmp_path / ".submitit").rglob("*_submission.sh")
    script = submission.read_text()
    assert "#SBATCH --array=0-1" in script and "gpus" not in script and "#SBATCH --cpus-per-task=1" in script
    assert "sacct" not in result.stderr  # no accounting on this cluster: squeue instead, without a warning per poll


@pytest.mark.slurm
def test_ddp_over_two_srun_tasks_writes_one_run_directory(cluster, tmp_path):
    _slurm_sweep(cluster, tmp_path, "trainer=ddp", "trainer.max_steps=200", *FAST)
    assert [r["status"] for r in summary_rows(tmp_path)] == ["ok"]
    assert [p.parent.name for p in tmp_path.rglob("metrics.json")] == ["0"]
    log = (tmp_path / "0" / "train.log").read_text()
    assert "MEMBER: 1/2" in log and "weights equal on 2 ranks" in log and "GLOBAL_RANK: 1" not in log  # rank 0's
    rank1 = next((tmp_path / ".submitit").rglob("*_1_log.err")).read_text()
    assert "MEMBER: 2/2" in rank1  # Slurm's second task was rank 1: srun started it, not Lightning
    assert "srun" in next((tmp_path / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in next((tmp_path / ".submitit").rglob("*_submission.sh")).read_text()


@pytest.mark.slurm
def test_your_own_sbatch_script_with_srun_runs_ddp_with_rank_zero_writing(cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH --ntasks-per-node=2\n#SBATCH --cpus-per-task=1\n"
        f"#SBATCH --output={tmp_path}/slurm.out\n#SBATCH --error={tmp_path}/slurm.err\n"
        f"srun {sys.executable} {ROOT / 'train.py'} trainer=ddp trainer.max_steps=200 {' '.join(FAST)} "
        f"hydra.run.dir={tmp_path / 'run'}\n"
    )
    job = _slurm(cluster, "sbatch", "--parsable", str(script)).strip()
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")

    def end_state():
        state = _slurm(cluster, "squeue", "-h", "--states=all", "-j", job, "-o", "%T").strip()
        return state if state in ended else None

    state = _wait_for(end_state, "the job to end")
    assert state == "COMPLETED", (tmp_path / "slurm.err").read_text()[-2000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "MEMBER: 1/2" in log and "weights equal on 2 ranks" in log and "GLOBAL_RANK: 1" not in log
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (tmp_path / "slurm.err").read_text()  # srun's second task, quiet
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 200


def _interrupted(cluster, tmp_path, how, steps, *overrides):
    """The same run uninterrupted (locally) and as a Slurm job interrupted once it has a checkpoint: both metrics,
    the job's restart count and its logs."""
    args = ["threads=1", f"trainer.max_steps={steps}", *overrides]
    sweep_dir = tmp_path / "slurm"
    sweep = _train(cluster, "-m", "hydra/launcher=slurm", *args, f"hydra.sweep.dir={sweep_dir}", background=True)
    ref = _train(cluster, *args, f"hydra.run.dir={tmp_path / 'ref'}", background=True)  # meanwhile, on the other core
    job = _job_id(sweep_dir)
    _wait_for(lambda: (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file(), "the first checkpoint")
    if how == "usr1":
        _slurm(cluster, "scancel", "--signal=USR1", job)
    else:
        _slurm(cluster, "scontrol", "requeue", job)
    for process in (sweep, ref):
        _, err = process.communicate(timeout=400)
        assert process.returncode == 0, err[-2000:]
    restarts = re.search(r"Restarts=(\d+)", _slurm(cluster, "scontrol", "show", "job", job)).group(1)
    metrics = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    return json.loads((tmp_path / "ref" / "metrics.json").read_text()), metrics, int(restarts), _logs(sweep_dir)


LOSSES = ("train/loss", "val/loss", "test/loss", "steps")


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["usr1", "requeue"])
def test_an_interrupted_job_requeues_and_ends_as_if_never_interrupted(cluster, tmp_path, how):
    ref, got, restarts, logs = _interrupted(cluster, tmp_path, how, 6000, "trainer.val_check_interval=1000")
    assert {k: got[k] for k in LOSSES} == {k: ref[k] for k in LOSSES}
    assert restarts == 1
    stopped = "SIGUSR1 after update" if how == "usr1" else "SIGTERM after update"  # scontrol requeue: no warning
    assert stopped in logs and f"resuming from {tmp_path}/slurm/0/checkpoints/last.ckpt" in logs
    assert sorted(p.name for p in (tmp_path / "slurm" / "0" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slurm
def test_a_preempted_ddp_job_requeues_and_ends_as_if_never_interrupted(cluster, tmp_path):
    ref, got, restarts, logs = _interrupted(
        cluster, tmp_path, "usr1", 2000, "trainer=ddp", "trainer.val_check_interval=500"
    )
    assert {k: got[k] for k in LOSSES} == {k: ref[k] for k in LOSSES}
    assert restarts == 1 and "requeued Slurm job" in logs
    rank1 = next((tmp_path / "slurm" / ".submitit").rglob("*_1_log.err")).read_text()
    assert "SIGUSR1 after update" in rank1 and "requeued Slurm job" not in rank1  # rank 0 alone asked Slurm


@pytest.mark.slurm
def test_a_cancelled_job_is_a_failed_row_and_the_sweep_ends(cluster, tmp_path):
    sweep = _train(
        cluster,
        "-m",
        "hydra/launcher=slurm",
        "trainer.max_steps=100000",
        "trainer.val_check_interval=1000",
        f"hydra.sweep.dir={tmp_path}",
        background=True,
    )
    job = _job_id(tmp_path)
    _wait_for(lambda: (tmp_path / "0" / "checkpoints" / "last.ckpt").is_file(), "the first checkpoint")
    _slurm(cluster, "scancel", job)
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1 and "jobs of this sweep failed" in err, err[-2000:]  # after its summary
    (row,) = summary_rows(tmp_path)
    assert row["status"] == f"failed: Slurm job {job} ended without a result (CANCELLED)"


@pytest.mark.slurm
def test_an_optuna_sweep_runs_its_trials_as_slurm_jobs_and_prunes_them(cluster, tmp_path):
    import optuna
    from optuna.trial import TrialState

    # one slot: the trials run one after another, so which are pruned does not depend on which job ends first
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    args += ["optimizer.lr=choice(0.2, 0.00001)", "hydra.sweeper.pruner.n_startup_trials=1"]
    args += ["hydra.sweeper.pruner.n_warmup_steps=0", "trainer.max_steps=300", *FAST]
    result = _slurm_sweep(cluster, tmp_path, *args)
    assert "trials run as Slurm jobs, 1 at a time" in result.stderr
    study = optuna.load_study(
        study_name="charmlp",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
        ),
    )
    rows = {r["job"]: r for r in summary_rows(tmp_path)}
    states = {t.state for t in study.trials}
    assert len(study.trials) == 2 and TrialState.PRUNED in states and TrialState.COMPLETE in states
    for trial in study.trials:
        assert re.search(rf"trial {trial.number}: Slurm job \d+", result.stderr)
        reports = (tmp_path / ".submitit" / f"trial_{trial.number}" / "reports.jsonl").read_text().splitlines()
        assert [json.loads(line)[0] for line in reports] == sorted(trial.intermediate_values)  # every report relayed
        row = rows[str(trial.number)]
        if trial.state == TrialState.PRUNED:
            update = max(trial.intermediate_values)
            assert row["status"] == f"pruned at update {update}" and update < 300
            assert "pruned by the sweep at update" in (tmp_path / str(trial.number) / "train.log").read_text()
        else:
            assert row["status"] == "ok" and sorted(trial.intermediate_values) == [100, 200, 300]
            assert float(row["val/loss"]) == pytest.approx(trial.value)
