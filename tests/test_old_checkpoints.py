"""Checkpoints written before the floor plan (b040acf: the network saved as `mlp.`) sample the same names, score
the same numbers and resume to the same weights as b040acf's own code gave (tests/fixtures/README.md)."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import torch

from charmlp.sampling.checkpoint import load_trained, network_state, upgrade_state_dict
from charmlp.training.run import run
from tests.conftest import ROOT, compose_cfg, run_script

FIXTURES = ROOT / "tests" / "fixtures"
MODEL = {
    "mlp": ["model.emb_dim=2", "model.hidden_dim=8"],
    "bn_mlp": ["model=bn_mlp", "model.emb_dim=2", "model.hidden_dim=8"],
}
# b040acf's sample.py n=8 seed=3, its scores of emma/olivia/ava, and the sha256 (first 32 digits) of the weights its
# train.py left after resuming the checkpoint to update 400 (names sorted, mlp. removed, float32 bytes)
EXPECTED = {
    "mlp": (
        "atev aclhkdneslf phlgsnsll ikisaroseumof an eot fleticva aya",
        "emma\t2.0991\nolivia\t2.5671\nava\t2.1309\n",
        "f7ecb6d22166169d5f8cc6e16b36ee8b",
    ),
    "bn_mlp": (
        "areu aanilpnteg phnivor klera ak emy gpenlrit ayecgkreosiii",
        "emma\t2.1947\nolivia\t2.6437\nava\t2.2755\n",
        "b1667dfa067364a3cfdeaceb7da1f6b4",
    ),
}


def weights_digest(state: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


@pytest.mark.parametrize("family", EXPECTED)
def test_an_old_checkpoint_samples_and_scores_as_before(family):
    ckpt = FIXTURES / f"b040acf_{family}.ckpt"
    names, scores, _ = EXPECTED[family]
    sampled = run_script("sample.py", f"ckpt={ckpt}", "n=8", "seed=3")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.split() == names.split()
    scored = run_script("sample.py", f"ckpt={ckpt}", "score=[emma,olivia,ava]")
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout == scores


@pytest.mark.parametrize("family", EXPECTED)
def test_an_old_checkpoint_resumes_to_the_weights_b040acf_reached(family, tmp_path):
    words = tmp_path / "words.txt"
    shutil.copy(FIXTURES / "b040acf_words.txt", words)
    args = [f"data.path={words}", "data.batch_size=8", "threads=1", "trainer.val_check_interval=100", "seed=5"]
    ckpt = FIXTURES / f"b040acf_{family}.ckpt"
    run(compose_cfg(tmp_path / "run", *MODEL[family], *args, "trainer.max_steps=400", "~logger", f"ckpt_path={ckpt}"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(name.startswith("net.") for name in state)  # written in today's names
    assert weights_digest(network_state(state)) == EXPECTED[family][2]


def test_old_and_new_names_read_alike():
    old = {"state_dict": {"mlp.C": torch.ones(2), "mlp.layers.0.weight": torch.zeros(1), "other": 1}}
    upgrade_state_dict(old)
    assert set(old["state_dict"]) == {"net.C", "net.layers.0.weight", "other"}
    assert set(network_state(old["state_dict"])) == {"C", "layers.0.weight"}
    assert network_state({"mlp.C": 1, "net.C": 2}) == {"C": 1}  # an old file: mlp. wins (a new one has no mlp.)
    trained = load_trained(FIXTURES / "b040acf_mlp.ckpt")
    assert set(trained.net.state) == {"C", "W1", "b1", "W2", "b2"}
