"""The train windows as random minibatches, a split as evaluation batches, and the unseen words of a split: torch
tensors, no Lightning (charmlp.training.datamodule serves them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

UNSEEN_SPLITS = ("val", "test")  # held-out splits whose loss is also given on unseen words alone


class MinibatchSampler:
    """Random minibatches of the train windows (or words), one per SGD update, drawn on the device they live on.

    `draw(n)` draws n updates' minibatches in one go (one index draw, one gather): the same numbers as n
    separate draws on the CPU generator, at a fraction of the per-call cost. The generator's state after
    a draw is what a checkpoint saves, so resume continues the same sequence.

    Whole words (Y of shape (words, block_size)) are cut per update to the batch's longest word + 1: the sequence
    families are causal, so the padding past it changes no prediction, and it costs a third of an update's time.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.X, self.Y, self.batch_size, self.generator = X, Y, batch_size, generator
        self.lengths = (Y >= 0).sum(1) if Y.ndim == 2 else None  # a word's predictions: its length + 1

    def draw(self, n: int) -> tuple[Any, Any]:
        """(n, batch_size, block_size) contexts and (n, batch_size) targets, as int64 ids; for whole words, n
        (batch_size, T) contexts and targets, T each batch's longest word + 1."""
        ix = torch.randint(len(self.Y), (n, self.batch_size), generator=self.generator, device=self.Y.device)
        X, Y = self.X[ix].long(), self.Y[ix].long()
        if self.lengths is None:
            return X, Y
        steps = self.lengths[ix].amax(1).tolist()
        return [x[:, :t] for x, t in zip(X, steps)], [y[:, :t] for y, t in zip(Y, steps)]


class SplitBatches:
    """The whole of a split in consecutive batches (for val/test), as a sized iterable Lightning accepts; a batch of
    whole words holds batch_size // block_size of them (about as many predictions as a batch of windows)."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int) -> None:
        self.X, self.Y = X, Y
        self.batch_size = max(1, batch_size // Y.shape[1]) if Y.ndim == 2 else batch_size

    def __len__(self) -> int:
        return -(-len(self.Y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for lo in range(0, len(self.Y), self.batch_size):
            yield self.X[lo : lo + self.batch_size].long(), self.Y[lo : lo + self.batch_size].long()


def stream_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank `rank`'s minibatch stream when a resume cannot continue the saved one: distinct per rank and
    update, the same for every resume of the same checkpoint (a tuple of ints hashes alike in every process)."""
    return hash((seed, rank, step)) & (2**63 - 1)


def unseen_words(words: Sequence[str], train: Sequence[str]) -> list[str]:
    """The words of a held-out split that are not training words (~8% of a names list repeat, so some are)."""
    seen = set(train)
    return [w for w in words if w not in seen]
