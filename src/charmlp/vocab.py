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
            raise CharmlpError(f"characters {''.join(unknown)!r} in {word!r} are not in the model's vocabulary")
        return [self.stoi[ch] for ch in word]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def to_dict(self) -> dict:
        """Plain data, safe for checkpoints loaded with `weights_only=True`."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(tuple(data["itos"]))
