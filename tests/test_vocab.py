import pytest

from charmlp.errors import CharmlpError
from charmlp.vocab import Vocabulary


def test_vocabulary_is_dot_then_sorted_characters():
    vocab = Vocabulary.from_words(["bob", "ann"])
    assert vocab.itos == (".", "a", "b", "n", "o")
    assert vocab.stoi == {".": 0, "a": 1, "b": 2, "n": 3, "o": 4}
    assert len(vocab) == 5


def test_encode_decode_round_trip():
    vocab = Vocabulary.from_words(["bob", "ann"])
    assert vocab.encode("nab") == [3, 1, 2]
    assert vocab.decode([3, 1, 2]) == "nab"


def test_dot_inside_a_word_is_an_error():
    with pytest.raises(CharmlpError, match="reserved"):
        Vocabulary.from_words(["an.n"])


def test_unknown_character_is_named():
    with pytest.raises(CharmlpError, match="'xz'"):
        Vocabulary.from_words(["ab"]).encode("zax")


def test_plain_dict_round_trip():
    vocab = Vocabulary.from_words(["émile", "zoë"])
    data = vocab.to_dict()
    assert data == {"itos": list(vocab.itos)} and all(isinstance(c, str) for c in data["itos"])
    assert Vocabulary.from_dict(data) == vocab
