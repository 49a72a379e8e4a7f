"""charmlp's Optuna sweeper: the search space, pruning, slots, a study that survives its sweep, plots, the dashboard."""

import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from charmlp.errors import CharmlpError, Pruned
from charmlp.rundir import trial as trial_link
from charmlp.sweep import search_space, slot
from charmlp.sweep.slot import Outcome, SlotSignals
from charmlp.sweep.store import finished_outcome
from charmlp.sweep.summary import collect
from charmlp.training.config import register_resolvers
from charmlp.training.run import run

from .conftest import FAST, ROOT, compose_cfg, run_script

TINY = ["trainer.max_steps=300", *FAST]
CONFIG = OmegaConf.create(
    {"hydra": {"runtime": {"choices": {"model": "mlp"}}}, "model": {"dropout": 0.0}, "optimizer": {"lr": 0.1}}
)


def summary(sweep_dir: Path) -> dict[str, dict]:
    with open(sweep_dir / "summary.csv") as f:
        return {r["job"]: r for r in csv.DictReader(f)}


def study_of(sweep_dir: Path, name: str = "charmlp") -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


# --- the search space, by hand ---------------------------------------------------------------------------------


def test_the_sweep_syntax_maps_to_optuna_distributions():
    params = {
        "optimizer.lr": "tag(log, interval(0.001, 0.01))",
        "model.dropout": "interval(0.1, 0.5)",
        "model": "choice(mlp, bn_mlp)",
    }
    space, fixed = search_space.parse(params, ["experiment=best", "+data.extra=range(6, 15, 3)"], CONFIG)
    assert space == {
        "optimizer.lr": FloatDistribution(0.001, 0.01, log=True),
        "model.dropout": FloatDistribution(0.1, 0.5),
        "model": CategoricalDistribution(["mlp", "bn_mlp"]),
        "+data.extra": IntDistribution(6, 15, step=3),  # hi included, as hydra-optuna-sweeper had it
    }
    assert fixed == ["experiment=best"]


def test_the_command_line_beats_the_file_both_ways():
    params = {"optimizer.lr": "interval(0.01, 0.1)", "model.dropout": "interval(0.1, 0.5)"}
    space, fixed = search_space.parse(params, ["optimizer.lr=0.05", "model.dropout=0.2,0.3"], CONFIG)
    assert space == {"model.dropout": CategoricalDistribution([0.2, 0.3])}
    assert fixed == ["optimizer.lr=0.05"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"model.hiden_dim": "choice(1, 2)"}, "model.hiden_dim is not a key of the config (add it with +model"),
        ({"optimizer.lr": "interval(0.1)"}, "cannot read 'optimizer.lr=interval(0.1)'"),
        ({"optimizer.lr": "interval(0.5, 0.1)"}, "optimizer.lr: "),  # low above high
        ({"optimizer.lr": "tag(log, interval(0.0, 0.1))"}, "optimizer.lr: "),  # log through zero
    ],
)
def test_a_bad_search_space_entry_is_named(entry, message):
    with pytest.raises(CharmlpError, match=re.escape(message)):
        search_space.parse(entry, [], CONFIG)


@pytest.mark.parametrize("sampler", ["tpe", "random", "qmc", "gp", "cmaes"])
@pytest.mark.parametrize("pruner", ["median", "successive_halving", "hyperband"])
def test_every_sampler_and_pruner_option_drives_a_study(sampler, pruner):
    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hparams_search=optuna_best",
                f"hydra/sweeper/sampler={sampler}",
                f"hydra/sweeper/pruner={pruner}",
            ],
            return_hydra_config=True,
        )
    space, _ = search_space.parse(OmegaConf.to_container(cfg.hydra.sweeper.params), [], cfg)
    study = optuna.create_study(sampler=instantiate(cfg.hydra.sweeper.sampler)(seed=0))
    study.pruner = instantiate(cfg.hydra.sweeper.pruner)
    for number in range(4):  # past cmaes's and gp's start-up trials would take too long; 4 runs each at least once
        trial = study.ask(space)
        assert set(trial.params) == set(space)
        for update in (500, 1000):
            trial.report(number + update / 1000, update)
            trial.should_prune()
        study.tell(trial, number + 1.0)
    assert [t.value for t in study.trials] == [1.0, 2.0, 3.0, 4.0]


# --- a trial's reports, in process -------------------------------------------------------------------------------


def test_a_run_reports_every_validation_and_stops_where_the_trial_is_pruned(tmp_path):
    reports = []

    def report(update, val_loss):
        reports.append((update, val_loss))
        return update == 200

    with trial_link.reporting_to(report), pytest.raises(Pruned) as pruned:
        run(compose_cfg(tmp_path, "trainer.max_steps=500", *FAST, "~logger"))
    assert [u for u, _ in reports] == [100, 200]  # no validation after the verdict
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m == {"pruned_at": 200, "val/loss": min(v for _, v in reports), "steps": 200, "seconds": m["seconds"]}
    assert (pruned.value.update, pruned.value.val_loss) == (200, m["val/loss"])
    assert trial_link.current_reporter() is None  # outside the block, runs report to nobody


def test_a_verdict_at_the_last_validation_leaves_the_run_complete(tmp_path):
    reports = []
    with trial_link.reporting_to(lambda update, val_loss: reports.append(update) or update == 200):
        val = run(compose_cfg(tmp_path, "trainer.max_steps=200", *FAST, "~logger"))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert reports == [100, 200] and "pruned_at" not in m and m["val/loss"] == val and "test/loss" in m


def test_the_summary_puts_finished_runs_first_then_pruned_then_failed(tmp_path):
    runs = {"0": {"error": "data.block_size must be at least 1"}, "1": {"pruned_at": 100, "val/loss": 2.5}}
    runs |= {"2": {"train/loss": 2.2, "val/loss": 2.6, "test/loss": 2.7}, "3": {"pruned_at": 200, "val/loss": 2.4}}
    for job, metrics in runs.items():
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- model.hidden_dim={job}\n")
        (tmp_path / job / "metrics.json").write_text(json.dumps(metrics))
    rows = collect(tmp_path)
    assert [(r["job"], r["status"], r["pruned_at"]) for r in rows] == [
        ("2", "ok", ""),
        ("3", "pruned at update 200", 200),
        ("1", "pruned at update 100", 100),
        ("0", "failed: data.block_size must be at least 1", ""),
    ]


# --- sweeps as a user runs them ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pruned_sweep(tmp_path_factory):
    """Four trials on two slots (threads=2 each asked, one given); lr 0.2 or 1e-5, so the slow ones are pruned."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "threads=2"]
    args += ["optimizer.lr=choice(0.2, 0.00001)", "hydra.sweeper.pruner.n_startup_trials=1"]
    args += ["hydra.sweeper.pruner.n_warmup_steps=0", *TINY]
    result = run_script("train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


def test_pruned_trials_are_pruned_in_the_study_the_summary_and_their_run_directory(pruned_sweep):
    sweep_dir, _ = pruned_sweep
    study, rows = study_of(sweep_dir), summary(sweep_dir)
    assert [t.params["optimizer.lr"] for t in study.trials] == [0.00001, 0.00001, 0.2, 0.00001]  # the seed's draws
    assert len(rows) == 4 and sorted(rows) == ["0", "1", "2", "3"]
    states = {t.number: t.state for t in study.trials}
    assert TrialState.PRUNED in states.values() and TrialState.COMPLETE in states.values()
    for trial in study.trials:
        row = rows[str(trial.number)]
        if trial.state == TrialState.PRUNED:
            update = max(trial.intermediate_values)
            assert row["status"] == f"pruned at update {update}" and update < 300
            assert float(row["val/loss"]) == pytest.approx(min(trial.intermediate_values.values()))
            assert "pruned by the sweep at update" in (sweep_dir / str(trial.number) / "train.log").read_text()
        else:
            assert trial.state == TrialState.COMPLETE and row["status"] == "ok"
            assert float(row["val/loss"]) == pytest.approx(trial.value)
            assert sorted(trial.intermediate_values) == [100, 200, 300]


def test_two_slots_run_at_once_with_a_share_of_the_cores_each(pruned_sweep):
    sweep_dir, _ = pruned_sweep
    first, second = study_of(sweep_dir).trials[:2]
    assert second.datetime_start < first.datetime_complete  # both started before either ended
    for job in ("0", "1"):
        assert "torch threads: 1" in (sweep_dir / job / "train.log").read_text()  # threads=2, 2 cores / 2 slots


def test_the_sweep_leaves_optunas_plots_and_its_table(pruned_sweep):
    sweep_dir, result = pruned_sweep
    plots = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
    for name in plots:
        assert (sweep_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| job | overrides |" in result.stderr and "jobs pruned" in result.stderr
    assert f"optuna-dashboard {sweep_dir / 'optuna.journal'}" in result.stderr


def test_optuna_dashboard_serves_the_study(pruned_sweep):
    """The dashboard's own app, given the journal's path as the README's command line gives it, over real HTTP."""
    from optuna_dashboard import wsgi

    sweep_dir, _ = pruned_sweep
    server = make_server("127.0.0.1", 0, wsgi(str(sweep_dir / "optuna.journal")), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = f"http://127.0.0.1:{server.server_port}/api/studies"
        studies = json.load(urllib.request.urlopen(api, timeout=30))["study_summaries"]
        trials = json.load(urllib.request.urlopen(f"{api}/{studies[0]['study_id']}?after=0", timeout=30))["trials"]
    finally:
        server.shutdown()
        thread.join()
    assert [s["study_name"] for s in studies] == ["charmlp"]
    assert sorted(t["state"] for t in trials) == sorted(t.state.name.title() for t in study_of(sweep_dir).trials)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass


def test_a_sweep_continues_its_study_without_running_a_finished_trial_again(tmp_path):
    """A sweep that died (kill -9) left two trials RUNNING: one had written its metrics.json, one was mid-training."""
    args = ["hparams_search=optuna", "hydra.sweeper.pruner=null", *TINY, f"hydra.sweep.dir={tmp_path}"]
    first = run_script("train.py", "-m", *args, "hydra.sweeper.n_trials=1")
    assert first.returncode == 0, first.stderr[-2000:]
    finished_before = (tmp_path / "0" / "metrics.json").stat().st_mtime_ns
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that has ended: the dead sweep's
    owner = {"host": socket.gethostname(), "pid": dead.pid, "started": "0"}
    study = study_of(tmp_path)
    done = study.ask({"optimizer.lr": FloatDistribution(0.01, 0.5, log=True)})
    (tmp_path / "ended").mkdir()
    (tmp_path / "ended" / "metrics.json").write_text(json.dumps({"val/loss": 2.9, "steps": 300}))
    midway = study.ask({"optimizer.lr": FloatDistribution(0.01, 0.5, log=True)})
    for trial, run_dir in ((done, tmp_path / "ended"), (midway, tmp_path / "midway")):
        trial.set_user_attr("sweep", owner)
        trial.set_user_attr("run_dir", str(run_dir))
    (tmp_path / "midway").mkdir()

    again = run_script("train.py", "-m", *args, "hydra.sweeper.n_trials=4")
    assert again.returncode == 0, again.stderr[-2000:]
    trials = study_of(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert trials[1].value == 2.9  # counted from its metrics.json, not run again
    assert trials[3].params["optimizer.lr"] == midway.params["optimizer.lr"]  # the interrupted one, again
    assert trials[3].user_attrs["retry_of"] == 2
    assert (tmp_path / "0" / "metrics.json").stat().st_mtime_ns == finished_before
    assert "interrupted" in json.loads((tmp_path / "midway" / "metrics.json").read_text())["error"]
    assert "0 of 4 trials" not in again.stderr and "2 of 4 trials done" in again.stderr


def test_failing_trials_are_recorded_with_their_reason_and_the_sweep_goes_on(tmp_path):
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra/sweeper/sampler=qmc"]
    args += ["hydra/sweeper/pruner=hyperband", "data.block_size=choice(0)", *TINY, f"hydra.sweep.dir={tmp_path}"]
    result = run_script("train.py", "-m", *args)
    assert result.returncode == 1, result.stderr[-2000:]  # the summary first, then the sweep says it failed
    assert (
        result.stderr.strip().splitlines()[-1] == f"error: 2 of 2 jobs of this sweep failed; see {tmp_path}/summary.csv"
    )
    reason = "data.block_size must be at least 1"
    assert [r["status"][: 8 + len(reason)] for r in summary(tmp_path).values()] == [f"failed: {reason}"] * 2
    trials = study_of(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 and reason in trials[0].user_attrs["error"]


def test_a_search_space_key_the_config_lacks_is_one_line(tmp_path):
    args = ["hparams_search=optuna", "model.hiden_dim=choice(1,2)", f"hydra.sweep.dir={tmp_path}"]
    result = run_script("train.py", "-m", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: hydra.sweeper.params: model.hiden_dim is not a key")


# --- failures, reruns, stops and studies sharing a directory ------------------------------------------------------


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def test_a_sweep_whose_jobs_failed_exits_1_after_its_summary(tmp_path):
    result = run_script(
        "train.py", "-m", "threads=1", "trainer.max_steps=100", "model.hidden_dim=-1,-2", f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert last_line(result) == f"error: 2 of 2 jobs of this sweep failed; see {tmp_path}/summary.csv"
    assert [r["status"][:30] for r in summary(tmp_path).values()] == ["failed: model.hidden_dim must "] * 2


def test_failed_trials_do_not_count_so_a_rerun_with_the_mistake_fixed_runs_its_trials(tmp_path):
    """The acceptance check: every trial fails (the sweep still ends, exit 1); the same command without the mistake
    into the same directory runs n_trials new trials and exits 0, though the failed trials' folders are still there."""
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "threads=1", "trainer.max_steps=200"]
    args += ["trainer.val_check_interval=100", f"hydra.sweep.dir={tmp_path}"]
    failing = run_script("train.py", "-m", *args, "model.dropout=2")
    assert failing.returncode == 1, failing.stderr[-2000:]
    assert last_line(failing) == f"error: 2 of 2 jobs of this sweep failed; see {tmp_path}/summary.csv"
    assert [t.state for t in study_of(tmp_path).trials] == [TrialState.FAIL] * 2  # n_trials failures: no more asked
    fixed = run_script("train.py", "-m", *args)
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    assert "0 of 2 trials done" in fixed.stderr
    finished = [r for r in summary(tmp_path).values() if r["status"] == "ok"]
    assert len(finished) == 2 and all(math.isfinite(float(r["val/loss"])) for r in finished)


def test_two_studies_in_one_sweep_directory_keep_their_trials_apart(tmp_path):
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=1", *TINY, f"hydra.sweep.dir={tmp_path}"]
    first = run_script("train.py", "-m", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = (tmp_path / "0" / "metrics.json").read_bytes()
    other = run_script("train.py", "-m", *args, "hydra.sweeper.study_name=other")
    assert other.returncode == 0, other.stderr[-2000:]
    assert (tmp_path / "0" / "metrics.json").read_bytes() == metrics  # the default study's trial 0, untouched
    assert (
        json.loads((tmp_path / "other-0" / "metrics.json").read_text())["val/loss"]
        == study_of(tmp_path, "other").trials[0].value
    )
    assert sorted(summary(tmp_path)) == ["0", "other-0"]


def slots_of(pid: int) -> list[int]:
    """The sweep's slot processes: its children forked from it (the same command line)."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == cmdline]


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None and time.monotonic() < end, f"no {path}"
        time.sleep(0.02)


def test_a_trial_past_training_counts_when_its_slot_dies_or_the_sweep_is_stopped(tmp_path):
    """Trial 0's slot is killed (kill -9) once trial 0 has written its metrics.json (it is making its plots): the
    trial counts as finished. The sweep gets SIGTERM once trial 1 has written its metrics.json: the slot lets it
    finish, and the sweep stops there (130), neither trial queued again nor listed twice."""
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=null", *TINY]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(tmp_path / "stderr.txt", "w") as err:
        sweep = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "-m", *args, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
        try:
            wait_for(tmp_path / "sweep" / "0" / "metrics.json", sweep)
            (slot,) = slots_of(sweep.pid)
            os.kill(slot, signal.SIGKILL)
            wait_for(tmp_path / "sweep" / "1" / "metrics.json", sweep)
            sweep.send_signal(signal.SIGTERM)
            assert sweep.wait(timeout=120) == 130
        finally:
            sweep.kill()
            sweep.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    trials = study_of(tmp_path / "sweep").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, stderr[-3000:]
    for trial in trials:
        assert (
            trial.value == json.loads((tmp_path / "sweep" / str(trial.number) / "metrics.json").read_text())["val/loss"]
        )
    assert "trial 0 had ended when its worker process died: counted" in stderr
    assert sorted(summary(tmp_path / "sweep")) == ["0", "1"]
    assert [r["status"] for r in summary(tmp_path / "sweep").values()] == ["ok", "ok"]
    assert (tmp_path / "sweep" / "1" / "loss.png").is_file()  # its report was written to the end


def test_a_trial_still_setting_up_when_the_sweep_gets_sigterm_stops_at_its_first_validation(tmp_path):
    """The slot only notes a SIGTERM outside training; one that came while the trial set up is passed on to the run at
    its first validation, so the trial stops there (with last.ckpt) and is queued again instead of training on."""
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null", "trainer.max_steps=5000"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    with open(tmp_path / "stderr.txt", "w") as err:
        sweep = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "-m", *args, *FAST, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
        try:
            wait_for(tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml", sweep)
            sweep.send_signal(signal.SIGTERM)
            assert sweep.wait(timeout=120) == 130
        finally:
            sweep.kill()
            sweep.wait()
    stderr = (tmp_path / "stderr.txt").read_text()
    stopped = re.search(r"SIGTERM after update (\d+)", stderr)
    assert stopped and int(stopped.group(1)) < 5000, stderr[-3000:]
    trials = study_of(tmp_path / "sweep").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # queued again with its values
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].system_attrs["fixed_params"] == trials[0].params
    assert (tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt").is_file()


def test_a_finished_run_directory_gives_the_trials_outcome(tmp_path):
    """The one reading of a run directory that StudyStore.recover and a dead slot share."""
    (tmp_path / "metrics.json").write_text(json.dumps({"val/loss": 2.5, "test/loss": 2.6}))
    assert finished_outcome(str(tmp_path)) == Outcome("complete", 2.5)
    (tmp_path / "metrics.json").write_text(json.dumps({"pruned_at": 300, "val/loss": 2.7}))
    assert finished_outcome(str(tmp_path)) == Outcome("pruned", 2.7, 300)
    (tmp_path / "metrics.json").write_text(json.dumps({"error": "interrupted"}))
    assert finished_outcome(str(tmp_path)) is None
    assert finished_outcome(str(tmp_path / "absent")) is None and finished_outcome(None) is None


def test_a_slot_that_got_a_signal_takes_an_exit_of_its_run_as_an_interruption(tmp_path, monkeypatch):
    """Lightning's exit(1) after a second Ctrl-C (in the test, outside GracefulStop) is an interruption once the slot
    has had a signal, and a plain failure otherwise. The job is a stand-in for Hydra's run_job."""
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path), "subdir": "${hydra.job.num}"},
                "job": {"id": 0, "num": 0},
                "hydra_logging": {},
                "verbose": False,
            }
        }
    )
    context = SimpleNamespace(config_loader=SimpleNamespace(load_sweep_config=lambda cfg, overrides: cfg.copy()))
    sent = []
    conn = SimpleNamespace(send=sent.append)
    exits = iter([SystemExit(1), SystemExit(1), KeyboardInterrupt()])

    def run_job(**kwargs):
        (tmp_path / "0").mkdir(exist_ok=True)
        raise next(exits)

    monkeypatch.setattr(slot, "run_job", run_job)
    monkeypatch.setattr(slot, "configure_log", lambda *args: None)
    signals = SlotSignals()
    monkeypatch.setattr(slot, "slot_signals", signals)
    assert slot.run_trial(conn, context, None, config, 0, []) == Outcome("failed", reason="exited with code 1")
    assert sent == [("start", str(tmp_path / "0"))]

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signals.install()
        os.kill(os.getpid(), signal.SIGTERM)  # the slot's handler only takes a note
        assert signals.received == signal.SIGTERM
        for _ in range(2):  # SystemExit(1), then KeyboardInterrupt
            outcome = slot.run_trial(conn, context, None, config, 0, [])
            assert outcome.state == "interrupted", outcome
        got = []
        signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))  # GracefulStop's, in training
        signals.pass_on()
        signals.pass_on()
        assert got == [signal.SIGTERM]  # passed on once: a second would abort the run at once
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
