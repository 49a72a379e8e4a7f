"""train.py and sample.py as a user runs them: end to end, bad input, multirun."""

import json
import re
import subprocess
import sys

import pytest

from .conftest import FAST, ROOT, run_script


def test_sample_prints_n_lowercase_names_deterministically(trained_run):
    ckpt = f"ckpt={trained_run / 'checkpoints' / 'best.ckpt'}"
    a = run_script("sample.py", ckpt, "n=5", "seed=1")
    b = run_script("sample.py", ckpt, "n=5", "seed=1")
    c = run_script("sample.py", ckpt, "n=5", "seed=2")
    assert a.returncode == 0, a.stderr
    names = a.stdout.splitlines()
    assert len(names) == 5 and all(re.fullmatch(r"[a-z]+", n) for n in names)
    assert a.stdout == b.stdout and a.stdout != c.stdout
    assert a.stderr == ""  # nothing but data, and nothing on stderr either when all is well


def test_train_prints_no_data_nor_adverts(trained_run):
    out, err = (trained_run.parent / f"train.{stream}" for stream in ("stdout", "stderr"))
    assert out.read_text() == ""  # no model summary table: stdout is for data, and train.py prints none
    assert "Tip:" not in err.read_text() and "litlogger" not in err.read_text()
    assert "MLP: 11,897 parameters" in err.read_text()


def test_run_directory_holds_everything(trained_run):
    for name in (
        "metrics.json",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "embedding.png",
        "loss.png",
        ".hydra/config.yaml",
    ):
        assert (trained_run / name).is_file(), name
    m = json.loads((trained_run / "metrics.json").read_text())
    assert set(m) >= {"train/loss", "val/loss", "test/loss", "steps", "seconds", "train_val_gap"}
    assert m["steps"] == 3000 and m["val/loss"] < 3.1


def test_tensorboard_has_the_scalars(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for event_file in trained_run.glob("tensorboard/events.out.tfevents*"):
        acc = EventAccumulator(str(event_file))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(acc.Scalars(tag))
    assert {"train/loss", "val/loss", "test/loss", "lr"} <= set(scalars)
    assert "hp_metric" not in scalars
    m = json.loads((trained_run / "metrics.json").read_text())
    assert min(e.value for e in scalars["val/loss"]) == pytest.approx(m["val/loss"], abs=1e-6)
    assert scalars["test/loss"][-1].value == pytest.approx(m["test/loss"], abs=1e-6)
    assert max(e.step for e in scalars["train/loss"]) == 3000  # the x-axis counts updates


def test_score_mean_over_test_words_is_the_test_loss(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    from charmlp.sampling.checkpoint import load_trained

    test_file = tmp_path / "test_words.txt"
    test_file.write_text("\n".join(load_trained(ckpt).words["test"]) + "\n")
    result = run_script("sample.py", f"ckpt={ckpt}", f"score_file={test_file}")
    assert result.returncode == 0, result.stderr
    mean = float(re.search(r"mean nll per character: ([0-9.]+)", result.stderr).group(1))
    assert mean == pytest.approx(json.loads((trained_run / "metrics.json").read_text())["test/loss"], abs=1e-4)


def test_two_job_multirun(tmp_path):
    result = run_script(
        "train.py", "-m", "model.hidden_dim=20,40", "trainer.max_steps=100", *FAST, f"hydra.sweep.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        assert (tmp_path / job / "metrics.json").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["data.path=MISSING"], "does not exist"),
        (["data.path=EMPTY"], "has no words"),
        (["data.path=DOT"], "reserved"),
        (["data.block_size=0"], "block_size must be at least 1"),
        (["data.batch_size=0"], "batch_size must be at least 1"),
        (["model.hidden_dim=0"], "hidden_dim must be at least 1"),
        (["optimizer.lr=-0.1"], "lr must be positive"),
        (["data.splits=[0.5,0.2,0.1]"], "data.splits"),
        (["ckpt_path=MISSING"], "does not exist"),
    ],
)
def test_train_bad_input_gets_one_line(tmp_path, args, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "dot.txt").write_text("anna\nbo.b\n")
    paths = {
        "MISSING": str(tmp_path / "nope.txt"),
        "EMPTY": str(tmp_path / "empty.txt"),
        "DOT": str(tmp_path / "dot.txt"),
    }
    args = [re.sub(r"MISSING|EMPTY|DOT", lambda m: paths[m.group(0)], a) for a in args]
    result = run_script("train.py", *args, "trainer.max_steps=10", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert message in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "content,message",
    [(None, "does not exist"), (b"garbage\n", "not a readable"), (b"PK\x03\x04broken", "not a readable")],
)
def test_sample_bad_checkpoint_gets_one_line(tmp_path, content, message):
    path = tmp_path / "x.ckpt"
    if content is not None:
        path.write_bytes(content)
    result = run_script("sample.py", f"ckpt={path}", "n=3")
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_sample_truncated_checkpoint(trained_run, tmp_path):
    data = (trained_run / "checkpoints" / "best.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    result = run_script("sample.py", f"ckpt={tmp_path / 'cut.ckpt'}", "n=3")
    assert result.returncode == 2 and "not a readable" in result.stderr and "Traceback" not in result.stderr


def test_unknown_config_option_gets_one_line(tmp_path):
    result = run_script("train.py", "experiment=nope", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: experiment=nope: no such option; experiment is one of: " + ", ".join(
        sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
    )


def test_sampling_imports_neither_torch_nor_lightning_nor_hydra(trained_run):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    code = (
        f"import sys; from charmlp.sampling.cli import main; main(['ckpt={ckpt}', 'n=2']); "
        "print([m for m in ('torch', 'lightning', 'hydra', 'matplotlib') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "arg,message",
    [
        ("model.hiden_dim=5", "model.hiden_dim: no such key in the config; did you mean model.hidden_dim?"),
        ("thread=2", "did you mean threads?"),
        ("trainer.max_steps=many", "trainer.max_steps='many' is not an integer (the default is 200000)"),
        ("model.dropout=[0.1]", "model.dropout=[0.1] is not a number"),
        ("hydra/launcher=nope", "options: basic, joblib"),
        ("logger=null", "drop the group with ~logger"),
        ("model.hidden_dim=[", "no viable alternative"),
    ],
)
def test_config_mistakes_get_one_line(tmp_path, arg, message):
    result = run_script("train.py", arg, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_a_missing_word_file_is_reported_before_torch_loads(tmp_path):
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "train.py"), f"data.path={tmp_path / 'nope.txt'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].endswith(
        "pass an existing file with data.path=FILE"
    )
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")
    }
    assert "hydra" in imported and "torch" not in imported and "lightning" not in imported


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    import os

    from charmlp.training.checkpoint_io import atomic_write

    previous = os.umask(umask)
    try:
        atomic_write(tmp_path / "metrics.json", lambda f: f.write(b"{}\n"))
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == mode == (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert (tmp_path / "metrics.json").read_bytes() == b"{}\n" and not list(tmp_path.glob(".*.tmp"))
