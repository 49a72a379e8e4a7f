"""Vocabulary: characters <-> integer ids, with '.' as id 0 marking both the start and the end of a word."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from charmlp.errors import CharmlpError

BOUNDARY = "."


@dataclass(frozen=True)
class Vocabulary:
    """The characters of a word list, sorted, after the boundary token '.' (id 0)."""

    itos: tuple[str, ...]
    stoi: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.itos or self.itos[0] != BOUNDARY:
            raise CharmlpError(f"a vocabulary must start with {BOUNDARY!r}, got {list(self.itos)[:5]}")
        object.__setattr__(self, "stoi", {ch: i for i, ch in enumerate(self.itos)})

    @classmethod
    def from_words(cls, words: Iterable[str]) -> Vocabulary:
        chars = set("".join(words))
        if BOUNDARY in chars:
            raise CharmlpError(f"a word contains {BOUNDARY!r}, which is reserved as the start/end token")
        return cls((BOUNDARY, *sorted(chars)))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, word: str) -> list[int]:
        unknown = sorted({ch for ch in word if ch not in self.stoi})
        if unknown:
            lower = word.lower()
            advice = (
                f"lower-case it: {lower!r}"
                if all(ch in self.stoi for ch in lower)
                else "use only those characters, or train on a word list that has them"
            )
            raise CharmlpError(
                f"characters {''.join(unknown)!r} in {word!r} are not in the model's vocabulary "
                f"({self.describe()}); {advice}"
            )
        return [self.stoi[ch] for ch in word]

    def describe(self) -> str:
        """The characters a word may use, runs of three or more as ranges: 'a-z' for the bundled names."""
        chars = sorted(ch for ch in self.itos if ch != BOUNDARY)  # '.' is the boundary token, never inside a word
        runs: list[list[str]] = []
        for ch in chars:
            if runs and ord(ch) == ord(runs[-1][-1]) + 1:
                runs[-1].append(ch)
            else:
                runs.append([ch])
        return "".join(f"{run[0]}-{run[-1]}" if len(run) >= 3 else "".join(run) for run in runs)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def to_dict(self) -> dict:
        """Plain data, safe for checkpoints loaded with `weights_only=True`."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """The inverse of to_dict; checks what it is given, which may come from any checkpoint file."""
        itos = data.get("itos") if isinstance(data, dict) else None
        if not isinstance(itos, list) or not all(isinstance(ch, str) and len(ch) == 1 for ch in itos):
            raise CharmlpError("a vocabulary's itos must be a list of one-character strings")
        if len(set(itos)) != len(itos):
            raise CharmlpError("a vocabulary's itos lists a character twice")
        return cls(tuple(itos))
