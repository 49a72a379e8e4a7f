"""Checkpoints written before the floor plan (b040acf: the network saved as `mlp.`) sample the same names, score
the same numbers and resume to the weights b040acf's own code gives (to float32 rounding: the update is numpy's
now, charmlp.training.hand_step). The old checkpoints are made here, by b040acf's train.py taken from the clone's
history, on this machine (so its floating point is the same)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charmlp.sampling.checkpoint import load_trained, network_state, upgrade_state_dict
from charmlp.training.run import run
from tests.conftest import ROOT, compose_cfg, run_script

OLD = "b040acf"  # the last commit before the packages
MODEL = {
    "mlp": ["model.emb_dim=2", "model.hidden_dim=8"],
    "bn_mlp": ["model=bn_mlp", "model.emb_dim=2", "model.hidden_dim=8"],
}
ARGS = ["data.batch_size=8", "threads=1", "trainer.val_check_interval=100", "seed=5", "~logger"]
SAMPLE, SCORE = ["n=8", "seed=3"], ["score=[emma,olivia,ava]"]


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> dict:
    """b040acf's code, 60 names, and per family: its last.ckpt at update 200, what its sample.py printed from it,
    and the weights its train.py reached resuming that checkpoint to update 400."""
    if subprocess.run(["git", "cat-file", "-e", f"{OLD}^{{commit}}"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip(f"commit {OLD} is not in this clone's history (a shallow clone)")
    root = tmp_path_factory.mktemp("b040acf")
    archive = subprocess.run(
        ["git", "archive", OLD, "src", "conf", "train.py", "sample.py"], cwd=ROOT, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    words = root / "words.txt"
    words.write_text("\n".join((ROOT / "data" / "names.txt").read_text().splitlines()[:60]) + "\n")
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "PYTHONWARNINGS": "ignore"}

    def old_script(script: str, *args: str) -> str:
        done = subprocess.run([sys.executable, script, *args], cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    made = {"words": words}
    for family, model in MODEL.items():
        data = [*model, f"data.path={words}", *ARGS]
        old_script("train.py", *data, "trainer.max_steps=200", f"hydra.run.dir={root / family}")
        ckpt = root / family / "checkpoints" / "last.ckpt"
        old_script(
            "train.py", *data, "trainer.max_steps=400", f"ckpt_path={ckpt}", f"hydra.run.dir={root / 'r' / family}"
        )
        resumed = torch.load(root / "r" / family / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        made[family] = {
            "ckpt": ckpt,
            "names": old_script("sample.py", f"ckpt={ckpt}", *SAMPLE),
            "scores": old_script("sample.py", f"ckpt={ckpt}", *SCORE),
            "resumed": network_state(resumed),
        }
    return made


@pytest.mark.parametrize("family", MODEL)
def test_an_old_checkpoint_samples_and_scores_as_before(old, family):
    ckpt = old[family]["ckpt"]
    assert any(k.startswith("mlp.") for k in torch.load(ckpt, weights_only=True)["state_dict"])  # the old names
    sampled = run_script("sample.py", f"ckpt={ckpt}", *SAMPLE)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout == old[family]["names"] and len(sampled.stdout.split()) == 8
    scored = run_script("sample.py", f"ckpt={ckpt}", *SCORE)
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout == old[family]["scores"]


@pytest.mark.parametrize("family", MODEL)
def test_an_old_checkpoint_resumes_to_the_weights_b040acf_reaches(old, family, tmp_path):
    data = [*MODEL[family], f"data.path={old['words']}", *ARGS]
    run(compose_cfg(tmp_path / "run", *data, "trainer.max_steps=400", f"ckpt_path={old[family]['ckpt']}"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(name.startswith("net.") for name in state)  # written in today's names
    resumed = network_state(state)
    assert resumed.keys() == old[family]["resumed"].keys()
    for name, weights in resumed.items():  # 200 updates apart, another summation order
        torch.testing.assert_close(weights, old[family]["resumed"][name], rtol=1e-4, atol=1e-5, msg=name)


def test_old_and_new_names_read_alike(old):
    checkpoint = {"state_dict": {"mlp.C": torch.ones(2), "mlp.layers.0.weight": torch.zeros(1), "other": 1}}
    upgrade_state_dict(checkpoint)
    assert set(checkpoint["state_dict"]) == {"net.C", "net.layers.0.weight", "other"}
    assert set(network_state(checkpoint["state_dict"])) == {"C", "layers.0.weight"}
    assert network_state({"mlp.C": 1, "net.C": 2}) == {"C": 1}  # an old file: mlp. wins (a new one has no mlp.)
    assert set(load_trained(Path(old["mlp"]["ckpt"])).net.state) == {"C", "W1", "b1", "W2", "b2"}
