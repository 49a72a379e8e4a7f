"""eval.py and the unseen-word losses: exact split losses of a checkpoint, on its own split or a word file."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from charmlp.data.batches import unseen_words
from charmlp.model.lecture import LectureMLP
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.evaluate import split_loss

from .conftest import run_script

SMALL = ["trainer.val_check_interval=100", "updates_per_step=50", "threads=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    result = run_script("train.py", "trainer.max_steps=300", *SMALL, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def test_unseen_words_are_the_held_out_words_not_in_train():
    assert unseen_words(["ava", "mia", "ava", "zoe"], ["mia", "leo"]) == ["ava", "ava", "zoe"]


def test_dedup_keeps_each_word_once_and_every_held_out_word_unseen(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("\n".join(["ava", "mia", "zoe", "leo", "kai"] * 4 + ["max", "ada", "ivy"]) + "\n")
    plain = NamesDataModule(str(path))
    plain.setup()
    assert sum(map(len, (plain.words[s] for s in ("train", "val", "test")))) == 23
    assert len(plain.words["val_unseen"]) < len(plain.words["val"])  # duplicates leak into val
    dedup = NamesDataModule(str(path), dedup=True)
    dedup.setup()
    words = [w for s in ("train", "val", "test") for w in dedup.words[s]]
    assert sorted(words) == sorted(set(words)) and len(words) == 8
    assert dedup.words["val_unseen"] == dedup.words["val"] and dedup.words["test_unseen"] == dedup.words["test"]


def test_split_loss_is_the_mean_over_every_example_by_hand():
    """A network of zeros predicts uniformly: ln(3) per example, whatever the batches; an empty split has none."""
    net = LectureMLP(vocab_size=3, block_size=1, emb_dim=1, hidden_dim=1)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    X, Y = torch.zeros(5, 1, dtype=torch.long), torch.tensor([0, 1, 2, 1, 0])
    from charmlp.data.batches import SplitBatches

    assert split_loss(net, SplitBatches(X, Y, 2)) == pytest.approx(math.log(3))
    assert split_loss(net, SplitBatches(X[:0], Y[:0], 2)) is None


def test_metrics_json_has_the_unseen_losses_and_counts(run_dir):
    m = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert 0 < m[f"{split}/words_unseen"] < m[f"{split}/words"] == 3247
        assert m[f"{split}/loss_unseen"] > m[f"{split}/loss"] - 0.2  # a few memorised words less: close, higher
    assert m["val/words"] - m["val/words_unseen"] == 416  # the bundled split's val words that are train words


def test_eval_reproduces_metrics_json(run_dir):
    result = run_script("eval.py", f"ckpt_path={run_dir}/checkpoints/best.ckpt")
    assert result.returncode == 0, result.stderr[-1500:]
    e, m = json.loads(result.stdout), json.loads((run_dir / "metrics.json").read_text())
    assert e["train/loss"] == m["train/loss"]  # the same function on the same weights
    for key in ("val/loss", "test/loss", "val/loss_unseen", "test/loss_unseen"):
        assert e[key] == pytest.approx(m[key], abs=1e-6), key
    assert {k: e[k] for k in e if "words" in k} == {k: m[k] for k in m if "words" in k}
    assert "unseen" in result.stderr and "val" in result.stderr  # the table on stderr


def test_eval_on_a_word_file_counts_unseen_words(run_dir, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("emma\nzzzzqx\n")  # emma: most likely a training word (the checkpoint carries them); zzzzqx: not
    result = run_script("eval.py", f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"data.path={words}")
    assert result.returncode == 0, result.stderr[-1500:]
    out = json.loads(result.stdout)
    assert out["words"] == 2 and out["words_unseen"] in (1, 2) and out["loss"] > 0
    assert out["loss_unseen"] >= out["loss"] or out["words_unseen"] == 2  # zzzzqx is unseen and unlikely


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["ckpt_path=/nonexistent/best.ckpt"], "does not exist"),
        (["data.path=/nonexistent.txt"], "data.path=/nonexistent.txt: no such file"),
        (["colour=red"], "unknown argument 'colour=red'"),
        (["threads=0"], "threads must be a positive integer"),
    ],
)
def test_eval_refuses_bad_input_in_one_line(run_dir, args, named):
    ckpt = [] if args[0].startswith("ckpt_path") else [f"ckpt_path={run_dir}/checkpoints/best.ckpt"]
    result = run_script("eval.py", *ckpt, *args)
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and named in result.stderr and result.stderr.count("\n") == 1


def test_eval_refuses_letters_the_model_does_not_know(run_dir, tmp_path):
    words = tmp_path / "w.txt"
    words.write_text("emma\nzoë\n")
    result = run_script("eval.py", f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"data.path={words}")
    assert result.returncode == 2 and "not in the vocabulary" in result.stderr and "Traceback" not in result.stderr


def test_dedup_run_scores_every_held_out_word_as_unseen(tmp_path):
    result = run_script("train.py", "trainer.max_steps=100", *SMALL, "data.dedup=true", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-1500:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["val/words_unseen"] == m["val/words"] and m["val/loss_unseen"] == pytest.approx(m["val/loss"], abs=1e-6)


def test_eval_without_arguments_takes_the_newest_best_checkpoint(run_dir, tmp_path):
    home = tmp_path / "outputs" / "2026-12-02" / "run"
    home.parent.mkdir(parents=True)
    shutil.copytree(run_dir, home)
    result = run_script("eval.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    assert json.loads(result.stdout)["train/loss"] == json.loads((run_dir / "metrics.json").read_text())["train/loss"]
