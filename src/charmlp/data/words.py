"""Reading a word list: one word a line, UTF-8, surrounding whitespace stripped, blank lines skipped."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from charmlp.errors import CharmlpError


@contextmanager
def _explained(path: Path) -> Iterator[None]:
    """Turns the reasons a word file cannot be opened into one line each."""
    try:
        yield
    except FileNotFoundError:
        raise CharmlpError(f"data file {path} does not exist; pass an existing file with data.path=FILE") from None
    except IsADirectoryError:
        raise CharmlpError(f"data file {path} is a directory; pass a text file with data.path=FILE") from None
    except OSError as err:
        raise CharmlpError(f"cannot read data file {path}: {err.strerror}") from None


def check_readable(path: str | Path) -> None:
    """Fail now, in one line, if read_words(path) could not open the file (train.py checks before its imports)."""
    with _explained(Path(path)), open(path, "rb"):
        pass


def read_words(path: str | Path) -> list[str]:
    """The words of a text file, in file order (duplicates kept, as the recipe keeps them)."""
    path = Path(path)
    with _explained(path):
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is not part of the first word
    except UnicodeDecodeError as err:
        raise CharmlpError(
            f"data file {path} is not UTF-8 text (bad byte at offset {err.start}); give one word a line in UTF-8"
        ) from None
    words = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        if not word.isprintable():
            raise CharmlpError(f"{path}:{line_no}: the word {word!r} has a control character; is this a text file?")
        if "." in word:
            raise CharmlpError(
                f"{path}:{line_no}: the word {word!r} contains '.', which is reserved as the start/end token"
            )
        words.append(word)
    if not words:
        raise CharmlpError(f"data file {path} has no words; give one word a line")
    return words
