"""sample.py's command line: bad input is one `error:` line and exit 2; temperature=0 is greedy decoding.

The checkpoint is a hand-made one shaped like train.py's (vocabulary '.abc', block_size 2, embedding 2, 8 hidden
units, weights from a fixed seed), small enough to follow greedy decoding by hand: from '.' it says 'bbaa'.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import run_script

ITOS = [".", "a", "b", "c"]
TRAIN = ["bbaa", "ab", "cab"]  # 'bbaa', the greedy name from '.', is a training word


def tiny_weights() -> dict[str, np.ndarray]:
    r = np.random.default_rng(30)  # a seed whose greedy names end ('.') well before max_len, with clear margins
    weights = {
        "C": r.normal(size=(4, 2)),
        "W1": r.normal(size=(4, 8)),
        "b1": r.normal(size=8),
        "W2": r.normal(size=(8, 4)) * 2,
        "b2": r.normal(size=4),
    }
    return {k: v.astype(np.float32) for k, v in weights.items()}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.ckpt"
    checkpoint = {
        "epoch": 0,
        "state_dict": {f"mlp.{k}": torch.from_numpy(v) for k, v in tiny_weights().items()},
        "hyper_parameters": {
            "model": {"emb_dim": 2, "hidden_dim": 8, "block_size": 2},
            "vocab": {"itos": ITOS},
        },
        "NamesDataModule": {"words": {"train": "\n".join(TRAIN), "val": "ca", "test": "b"}},
    }
    torch.save(checkpoint, path)
    return path


def sample(*args: str) -> subprocess.CompletedProcess:
    return run_script("sample.py", *args, timeout=60)


def assert_one_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one line on stderr, `error: ...`, no traceback; returns the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- 1. score_file= names itself, not train.py's data.path= ----


def test_missing_score_file_names_score_file(ckpt, tmp_path):
    missing = tmp_path / "missing.txt"
    line = assert_one_error(sample(f"ckpt={ckpt}", f"score_file={missing}"))
    assert line == f"error: score_file={missing}: no such file; give a word file, one word a line"
    assert "data.path" not in line


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "is a directory; give a word file, one word a line"),
        (b"\n  \n", "has no words; give one word a line"),
        (b"\xff\xfe\xfa\n", "is not UTF-8 text"),
        (b"ab\nem.ma\n", ":2: the word 'em.ma' contains '.'"),
    ],
)
def test_bad_score_file_names_score_file(ckpt, tmp_path, content, message):
    path = tmp_path / "words"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    line = assert_one_error(sample(f"ckpt={ckpt}", f"score_file={path}"), f"score_file={path}", message)
    assert "data.path" not in line and "data file" not in line


# ---- 2. ckpt= a run directory ----


@pytest.mark.parametrize("inside", ["checkpoints/best.ckpt", "best.ckpt"])
def test_ckpt_directory_uses_its_best_ckpt(ckpt, tmp_path, inside):
    (tmp_path / inside).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ckpt, tmp_path / inside)
    from_dir = sample(f"ckpt={tmp_path}", "n=5", "seed=3")
    from_file = sample(f"ckpt={ckpt}", "n=5", "seed=3")
    assert from_dir.returncode == 0 and from_dir.stderr == "", from_dir.stderr
    assert from_dir.stdout == from_file.stdout and len(from_dir.stdout.splitlines()) == 5


def test_ckpt_directory_without_best_ckpt_says_what_to_give(ckpt, tmp_path):
    assert_one_error(
        sample(f"ckpt={tmp_path}", "n=2"),
        f"ckpt={tmp_path} is a directory",
        f"e.g. ckpt={tmp_path / 'checkpoints' / 'best.ckpt'}",
    )
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(ckpt, tmp_path / "checkpoints" / "last.ckpt")  # no best.ckpt: the file that is there is suggested
    assert_one_error(sample(f"ckpt={tmp_path}", "n=2"), f"e.g. ckpt={tmp_path / 'checkpoints' / 'last.ckpt'}")


# ---- 3.-5. seed, n, max_len, temperature ----


@pytest.mark.parametrize(
    "arg,message",
    [
        ("seed=-1", "seed must be >= 0, got -1"),
        ("n=100000000000", "at most 1,000,000 names"),
        ("n=1000001", "at most 1,000,000 names"),
        ("max_len=100000000000", "at most 10,000 characters"),
        ("max_len=10001", "at most 10,000 characters"),
        ("temperature=nan", "temperature must be a finite number >= 0, got nan"),
        ("temperature=inf", "temperature must be a finite number >= 0, got inf"),
        ("temperature=-inf", "temperature must be a finite number >= 0, got -inf"),
        ("temperature=-0.5", "temperature must be a finite number >= 0, got -0.5"),
        ("top_k=0", "top_k must be at least 1"),
        ("top_k=-3 temperature=0", "top_k must be at least 1, got -3"),
        ("n=0", "n must be at least 1"),
    ],
)
def test_out_of_range_options_get_one_line(ckpt, arg, message):
    assert_one_error(sample(f"ckpt={ckpt}", *arg.split()), message)


def test_the_largest_n_and_max_len_allowed_still_run(ckpt):
    result = sample(f"ckpt={ckpt}", "n=1000000", "max_len=10000", "temperature=0")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout == "bbaa\n" * 1_000_000


# ---- 6. the end token '.' in a prefix or a scored word; characters outside the vocabulary ----


@pytest.mark.parametrize(
    "arg,message",
    [
        ("prefix=a.b", "prefix 'a.b' contains '.'"),
        ("prefix=.", "prefix '.' contains '.'"),
        ("score=[ab,em.ma]", "the word 'em.ma' contains '.'"),
        ("prefix=x", "characters 'x' in 'x' are not in the model's vocabulary (a-c)"),
        ("score=[abd]", "characters 'd' in 'abd' are not in the model's vocabulary (a-c)"),
        ("prefix=A", "lower-case it: 'a'"),
    ],
)
def test_bad_words_get_one_line_naming_them(ckpt, arg, message):
    assert_one_error(sample(f"ckpt={ckpt}", arg), message)


def test_score_file_with_unknown_characters_names_the_word(ckpt, tmp_path):
    (tmp_path / "w.txt").write_text("ab\nbad\n")
    assert_one_error(sample(f"ckpt={ckpt}", f"score_file={tmp_path / 'w.txt'}"), "'d' in 'bad'")


# ---- 7. temperature=0: greedy decoding ----


def greedy_by_hand(prefix: str, max_len: int = 50) -> tuple[str, float]:
    """Argmax of the network's logits, step by step, in float64 from the checkpoint's weights; and the name's
    log-probability (end token included) under the model at temperature 1."""
    w = {k: v.astype(np.float64) for k, v in tiny_weights().items()}
    context, name, logprob = [0, 0] + [ITOS.index(ch) for ch in prefix], prefix, 0.0
    while len(name) < max_len:
        logits = np.tanh(w["C"][context[-2:]].reshape(-1) @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"]
        top, second = np.sort(logits)[-2:][::-1]
        assert top - second > 0.1  # no near-tie that float32 rounding could flip
        ix = int(np.argmax(logits))
        logprob += logits[ix] - np.log(np.exp(logits).sum())
        if ix == 0:
            break
        name, context = name + ITOS[ix], context + [ix]
    return name, logprob


@pytest.mark.parametrize("prefix", ["", "a", "c"])
def test_greedy_is_the_argmax_by_hand_whatever_the_seed(ckpt, prefix):
    expected, logprob = greedy_by_hand(prefix)
    assert len(expected) > len(prefix) + 1  # a real walk, not an immediate end
    runs = [
        sample(f"ckpt={ckpt}", "n=4", "temperature=0", f"prefix={prefix}", *extra)
        for extra in (["seed=0"], ["seed=1"], ["seed=1", "top_k=1"], ["seed=7", "top_k=3"])
    ]
    for result in runs:
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout == f"{expected}\n" * 4
    as_json = json.loads(sample(f"ckpt={ckpt}", "n=2", "temperature=0", f"prefix={prefix}", "format=json").stdout)
    assert [r["name"] for r in as_json] == [expected] * 2 and all(r["finished"] for r in as_json)
    assert as_json[0]["logprob"] == pytest.approx(logprob, abs=1e-5)  # the model's own, temperature-1 logprob


def test_greedy_name_from_the_start_token(ckpt):
    assert greedy_by_hand("")[0] == "bbaa"  # the docstring's claim, so the tests below mean what they say


def test_greedy_cut_by_max_len_is_unfinished(ckpt):
    result = sample(f"ckpt={ckpt}", "n=1", "temperature=0", "max_len=3", "format=csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split(",")[::2] == ["bba", "False"]


def test_greedy_logprob_is_the_score_of_its_name(ckpt):
    """The greedy name's logprob is minus its nll from score=: both are the model at temperature 1."""
    as_json = json.loads(sample(f"ckpt={ckpt}", "n=1", "temperature=0", "format=json").stdout)[0]
    scored = json.loads(sample(f"ckpt={ckpt}", f"score=[{as_json['name']}]", "format=json").stdout)[0]
    assert as_json["logprob"] == pytest.approx(-scored["nll"], abs=1e-5)


def test_greedy_unique_says_how_many_names_exist(ckpt):
    line = assert_one_error(sample(f"ckpt={ckpt}", "n=3", "temperature=0", "unique=true"))
    assert "greedy decoding gives exactly 1 name per prefix" in line and "n=1" in line and "temperature>0" in line
    one = sample(f"ckpt={ckpt}", "n=1", "temperature=0", "unique=true")
    assert one.returncode == 0 and one.stdout == "bbaa\n"


def test_greedy_novel_refuses_a_training_word_and_repeats_a_new_one(ckpt):
    assert_one_error(
        sample(f"ckpt={ckpt}", "n=3", "temperature=0", "novel=true"),
        "greedy decoding gives exactly 1 name for prefix='', 'bbaa', and it is a training word",
        "temperature>0",
    )
    expected = greedy_by_hand("a")[0]
    assert expected not in TRAIN
    result = sample(f"ckpt={ckpt}", "n=3", "temperature=0", "novel=true", "prefix=a")
    assert result.returncode == 0 and result.stdout == f"{expected}\n" * 3
    assert_one_error(sample(f"ckpt={ckpt}", "n=3", "temperature=0", "novel=true", "unique=true", "prefix=a"), "n=1")


def test_positive_temperature_names_are_unchanged(ckpt):
    """Pinned from the sampler before greedy decoding existed: the same seed keeps printing the same names."""
    result = sample(f"ckpt={ckpt}", "n=8", "seed=0")
    assert result.stdout.split() == ["bbcaa", "bcaa", "bcaa", "baaa", "ccaa", "cbaa", "bcaaa", "cbcaa"]
    result = sample(f"ckpt={ckpt}", "n=6", "seed=1", "temperature=0.7", "top_k=2", "prefix=c")
    assert result.stdout.split() == ["cbcaa", "ccaa", "cbcaa", "ccaa", "cbcaa", "cbcaa"]


def test_names_longer_than_the_first_buffer_are_whole():
    """generate widens its buffer as names grow: a model that never ends fills max_len exactly."""
    from charmlp.data.vocab import Vocabulary
    from charmlp.sampling.generate import Network, generate

    state = {
        "C": np.zeros((3, 1), np.float32),
        "W1": np.zeros((1, 1), np.float32),
        "b1": np.zeros(1, np.float32),
        "W2": np.zeros((1, 3), np.float32),
        "b2": np.array([-30.0, 0.0, 0.0], np.float32),  # '.' is (almost) never drawn
    }
    net = Network.from_state({"emb_dim": 1, "hidden_dim": 1, "block_size": 1}, state, 3)
    samples = generate(net, Vocabulary((".", "a", "b")), 4, np.random.default_rng(0), max_len=200)
    assert [len(s.name) for s in samples] == [200] * 4 and not any(s.finished for s in samples)
    greedy = generate(net, Vocabulary((".", "a", "b")), 2, np.random.default_rng(0), temperature=0, max_len=77)
    assert [s.name for s in greedy] == ["a" * 77] * 2  # a tie goes to the lower id
