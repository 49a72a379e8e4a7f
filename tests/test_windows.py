import random

import pytest
import torch

from charmlp.data.vocab import Vocabulary
from charmlp.data.windows import build_windows, index_dtype, min_words_for, split_words
from charmlp.errors import CharmlpError


def seed_build(words, stoi, block_size):
    """The lecture's loop, verbatim, as the reference."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X), torch.tensor(Y)


def test_windows_by_hand():
    vocab = Vocabulary.from_words(["ab", "b"])  # . a b -> 0 1 2
    X, Y = build_windows(["ab", "b"], vocab, block_size=2)
    assert X.tolist() == [[0, 0], [0, 1], [1, 2], [0, 0], [0, 2]]
    assert Y.tolist() == [1, 2, 0, 2, 0]
    assert X.dtype == torch.uint8 and Y.dtype == torch.uint8


@pytest.mark.parametrize("block_size", [1, 3, 5])
def test_windows_match_the_seed_loop(block_size):
    words = ["emma", "olivia", "ava", "x", "isabella"]
    vocab = Vocabulary.from_words(words)
    X, Y = build_windows(words, vocab, block_size)
    X_ref, Y_ref = seed_build(words, vocab.stoi, block_size)
    assert torch.equal(X.long(), X_ref) and torch.equal(Y.long(), Y_ref)


def test_block_size_below_one_is_an_error():
    with pytest.raises(CharmlpError, match="block_size"):
        build_windows(["ab"], Vocabulary.from_words(["ab"]), 0)


def test_narrowest_dtype():
    assert index_dtype(27) == torch.uint8
    assert index_dtype(256) == torch.uint8
    assert index_dtype(257) == torch.int16


def test_split_is_the_seeds_shuffle_and_cut():
    words = [f"w{i}" for i in range(100)]
    split = split_words(words, [0.8, 0.1, 0.1], seed=42)
    expected = list(words)
    random.seed(42)
    random.shuffle(expected)
    assert split["train"] == expected[:80]
    assert split["val"] == expected[80:90]
    assert split["test"] == expected[90:]


def test_split_is_deterministic_and_disjoint_by_position():
    words = [f"w{i}" for i in range(1000)]
    a = split_words(words, [0.8, 0.1, 0.1], seed=7)
    b = split_words(words, [0.8, 0.1, 0.1], seed=7)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert not set(a["train"]) & set(a["val"]) and not set(a["val"]) & set(a["test"])
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(words)
    assert split_words(words, [0.8, 0.1, 0.1], seed=8) != a


def test_too_few_words_says_the_minimum():
    assert min_words_for([0.8, 0.1, 0.1]) == 6  # 6 words: int(4.8)=4 train, int(5.4)=5 -> 1 val, 1 test
    assert split_words(list("abcdef"), [0.8, 0.1, 0.1], seed=1)["test"]  # 5 words would leave val empty
    with pytest.raises(CharmlpError, match="at least 6"):
        split_words(["a", "b", "c"], [0.8, 0.1, 0.1], seed=42)


@pytest.mark.parametrize("fractions", [[0.8, 0.1], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0], [0.9, 0.2, -0.1]])
def test_impossible_fractions(fractions):
    with pytest.raises(CharmlpError, match="data.splits"):
        split_words(["a"] * 100, fractions, seed=42)
