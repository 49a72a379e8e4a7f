"""Reading word files: every odd input either works or fails with one clear CharmlpError."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charmlp.data.words import read_words
from charmlp.errors import CharmlpError
from charmlp.training.datamodule import NamesDataModule


def write(tmp_path, data: bytes):
    path = tmp_path / "words.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data,words",
    [
        (b"anna\r\nbob\r\n", ["anna", "bob"]),  # CRLF
        (b"\xef\xbb\xbfanna\nbob\n", ["anna", "bob"]),  # UTF-8 byte-order mark
        ("zoë\nrenée\n".encode(), ["zoë", "renée"]),  # non-ASCII
        (b"\n  anna  \n\n\tbob\n\n", ["anna", "bob"]),  # blank lines, surrounding whitespace
        (b"anna\nanna\nbob", ["anna", "anna", "bob"]),  # duplicates kept, no final newline
    ],
)
def test_odd_but_valid_files(tmp_path, data, words):
    assert read_words(write(tmp_path, data)) == words


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "has no words"),
        (b"\n \n", "has no words"),
        (b"\xff\xfe\x00garbage\x80", "not UTF-8"),
        (b"an\x00na\n", "control character"),
        (b"anna\nbo.b\n", "reserved"),
    ],
)
def test_bad_files(tmp_path, data, message):
    with pytest.raises(CharmlpError, match=message):
        read_words(write(tmp_path, data))


def test_missing_directory_and_unreadable(tmp_path):
    with pytest.raises(CharmlpError, match="does not exist"):
        read_words(tmp_path / "nope.txt")
    with pytest.raises(CharmlpError, match="is a directory"):
        read_words(tmp_path)
    path = write(tmp_path, b"anna\n")
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads anything
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(CharmlpError, match="cannot read"):
        read_words(path)


@pytest.mark.parametrize("n", [1, 5])
def test_too_few_words_for_the_split(tmp_path, n):
    path = write(tmp_path, "".join(f"w{chr(97 + i)}\n" for i in range(n)).encode())
    with pytest.raises(CharmlpError, match="needs at least 6"):
        NamesDataModule(str(path)).setup()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_file_builds_windows_or_fails_cleanly(tmp_path, data):
    path = write(tmp_path, data)
    dm = NamesDataModule(str(path), block_size=2)
    try:
        dm.setup()
    except CharmlpError:
        return
    words = read_words(path)
    assert sum(len(dm.words[k]) for k in dm.words) == len(words)
    for name, (X, Y) in dm.windows.items():
        assert len(X) == len(Y) == sum(len(w) + 1 for w in dm.words[name])
        assert int(Y.max()) < len(dm.vocab) and int((Y == 0).sum()) == len(dm.words[name])
