"""Words -> context windows (X, Y) exactly as the seed builds them, or whole words as sequences (the sequence
families' data), and the shuffled train/val/test split."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from charmlp.data.vocab import BOUNDARY, Vocabulary
from charmlp.errors import CharmlpError

SPLIT_NAMES = ("train", "val", "test")


def split_words(words: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Shuffle with `random.Random(seed)` (the seed's `random.seed(42); random.shuffle`) and cut train/val/test."""
    fractions = check_fractions(fractions)
    shuffled = list(words)
    random.Random(seed).shuffle(shuffled)
    cuts = _cuts(len(shuffled), fractions)
    minimum = min_words_for(fractions)
    if any(lo == hi for lo, hi in zip(cuts, cuts[1:])):
        raise CharmlpError(
            f"{len(words)} words are too few for a {'/'.join(f'{f:g}' for f in fractions)} split: "
            f"it needs at least {minimum} so that train, val and test each get one"
        )
    return {name: shuffled[lo:hi] for name, lo, hi in zip(SPLIT_NAMES, cuts, cuts[1:])}


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise CharmlpError(f"data.splits must be three positive fractions summing to 1, got {list(fractions)}")
    return fractions


def _cuts(n: int, fractions: Sequence[float]) -> list[int]:
    # int(0.8 * n), int(0.9 * n): the seed's own rounding
    return [0, int(fractions[0] * n), int((fractions[0] + fractions[1]) * n), n]


def min_words_for(fractions: Sequence[float]) -> int:
    n = 3
    while any(lo == hi for lo, hi in zip(_cuts(n, fractions), _cuts(n, fractions)[1:])):
        n += 1
    return n


def index_dtype(vocab_size: int) -> torch.dtype:
    """The narrowest integer dtype that holds every id (windows cost block_size bytes an example at 27 chars)."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if vocab_size - 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def build_windows(words: Sequence[str], vocab: Vocabulary, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X[i] holds the `block_size` ids before Y[i], padded with '.': one example per character and one for the end.

    Vectorised: each word becomes `'.' * block_size + word + '.'` in one flat id stream, and every position
    past a segment's padding is a target whose window is the `block_size` ids before it.
    """
    if block_size < 1:
        raise CharmlpError(f"data.block_size must be at least 1, got {block_size}")
    dtype = index_dtype(len(vocab))
    if not words:
        return torch.empty(0, block_size, dtype=dtype), torch.empty(0, dtype=dtype)
    pad = BOUNDARY * block_size
    stream = encode_stream("".join(pad + w + BOUNDARY for w in words), vocab)
    seg_len = torch.tensor([len(w) + 1 + block_size for w in words])
    seg_start = torch.cumsum(seg_len, 0) - seg_len
    pos_in_seg = torch.arange(len(stream)) - torch.repeat_interleave(seg_start, seg_len)
    target_pos = torch.nonzero(pos_in_seg >= block_size).squeeze(1)
    X = stream[target_pos.unsqueeze(1) + torch.arange(-block_size, 0)]
    Y = stream[target_pos]
    return X.to(dtype), Y.to(dtype)


def encode_stream(text: str, vocab: Vocabulary) -> torch.Tensor:
    """Ids of every character of `text` by a code-point lookup table, without a Python loop over characters."""
    codepoints = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()
    table = torch.full((max(max(map(ord, vocab.itos)), int(codepoints.max())) + 1,), -1, dtype=torch.long)
    table[torch.tensor([ord(ch) for ch in vocab.itos])] = torch.arange(len(vocab))
    ids = table[codepoints]
    if (ids < 0).any():
        unknown = sorted({chr(c) for c in codepoints[ids < 0].unique().tolist()})
        raise CharmlpError(f"characters {''.join(unknown)!r} are not in the vocabulary")
    return ids


PAD = -1  # a sequence's target past its end token: no prediction (cross_entropy's ignore_index)
MODES = ("windows", "words")


def build_sequences(words: Sequence[str], vocab: Vocabulary, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word as one example of `block_size` steps, as makemore.py builds them: X = '.' + word, Y = word + '.',
    X padded with '.' and Y with PAD past the end, so every position up to the end token is a prediction.

    A word of n characters gives n + 1 predictions, as its n + 1 context windows do, so losses per character are
    comparable between the two modes.
    """
    longest = max((len(w) for w in words), default=0)
    if longest + 1 > block_size:
        raise CharmlpError(
            f"data.block_size={block_size} is too short for whole words: the longest has {longest} characters; "
            f"set data.block_size={longest + 1} or more (or null: the longest word + 1)"
        )
    X = torch.zeros(len(words), block_size, dtype=index_dtype(len(vocab)))
    Y = torch.full((len(words), block_size), PAD, dtype=torch.int16 if len(vocab) <= 2**15 else torch.int64)
    if words:
        ids = encode_stream("".join(w + BOUNDARY for w in words), vocab)
        lengths = torch.tensor([len(w) + 1 for w in words])
        row = torch.repeat_interleave(torch.arange(len(words)), lengths)
        col = torch.arange(len(ids)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        Y[row, col] = ids.to(Y.dtype)
        keep = col + 1 < block_size  # X is Y shifted right by one, '.' first
        X[row[keep], col[keep] + 1] = ids[keep].to(X.dtype)
    return X, Y


def longest_sequence(words: Sequence[str]) -> int:
    """The block size that holds every word with its start and end token: the longest word + 1."""
    return max((len(w) for w in words), default=0) + 1
