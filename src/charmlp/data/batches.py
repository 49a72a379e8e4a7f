"""The train windows as random minibatches, a split as evaluation batches, and the unseen words of a split: torch
tensors, no Lightning (charmlp.training.datamodule serves them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

UNSEEN_SPLITS = ("val", "test")  # held-out splits whose loss is also given on unseen words alone


class MinibatchSampler:
    """Random minibatches of the train windows, one per SGD update, drawn on the device the windows live on.

    `draw(n)` draws n updates' minibatches in one go (one index draw, one gather): the same numbers as n
    separate draws on the CPU generator, at a fraction of the per-call cost. The generator's state after
    a draw is what a checkpoint saves, so resume continues the same sequence.
    """

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.X, self.Y, self.batch_size, self.generator = X, Y, batch_size, generator

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, batch_size, block_size) contexts and (n, batch_size) targets, as int64 ids."""
        ix = torch.randint(len(self.Y), (n, self.batch_size), generator=self.generator, device=self.Y.device)
        return self.X[ix].long(), self.Y[ix].long()


class SplitBatches:
    """The whole of a split in consecutive batches (for val/test), as a sized iterable Lightning accepts."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor, batch_size: int) -> None:
        self.X, self.Y, self.batch_size = X, Y, batch_size

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
