import pytest

from charmlp.data.vocab import Vocabulary
from charmlp.errors import CharmlpError


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


def test_unknown_characters_message_says_what_the_vocabulary_is_and_what_to_do():
    names = Vocabulary.from_words(["abcdefghijklmnopqrstuvwxyz"])  # the bundled names' characters
    with pytest.raises(CharmlpError) as err:
        names.encode("KA")
    assert str(err.value) == "characters 'AK' in 'KA' are not in the model's vocabulary (a-z); lower-case it: 'ka'"
    with pytest.raises(CharmlpError) as err:
        names.encode("Zoë")
    assert str(err.value) == (
        "characters 'Zë' in 'Zoë' are not in the model's vocabulary (a-z); "
        "use only those characters, or train on a word list that has them"
    )


@pytest.mark.parametrize(
    "words,description",
    [
        (["abcz"], "a-cz"),  # a run of three is a range; z stands alone
        (["abx"], "abx"),  # a run of two stays as it is
        (["ann-lee", "zoë"], "-aelnozë"),  # '-' is a character too; '.' never is (the boundary)
        (["ab", "AB"], "ABab"),
    ],
)
def test_describe_writes_runs_as_ranges(words, description):
    assert Vocabulary.from_words(words).describe() == description


@pytest.mark.parametrize(
    "data,message",
    [
        ({"itos": [".", "a", "a"]}, "lists a character twice"),
        ({"itos": [".", "ab"]}, "one-character strings"),
        ({"itos": ".ab"}, "one-character strings"),
        ({"itos": [".", 1]}, "one-character strings"),
        ({}, "one-character strings"),
        ([".", "a"], "one-character strings"),
        ({"itos": ["a", "."]}, "must start with '.'"),
        ({"itos": []}, "must start with '.'"),
    ],
)
def test_from_dict_checks_what_it_is_given(data, message):
    with pytest.raises(CharmlpError, match=message):
        Vocabulary.from_dict(data)


def test_plain_dict_round_trip():
    vocab = Vocabulary.from_words(["émile", "zoë"])
    data = vocab.to_dict()
    assert data == {"itos": list(vocab.itos)} and all(isinstance(c, str) for c in data["itos"])
    assert Vocabulary.from_dict(data) == vocab
