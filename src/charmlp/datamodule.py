"""NamesDataModule: reads the word list, builds the vocabulary, the split and the windows, serves minibatches."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import lightning as L
import torch

from charmlp.errors import CharmlpError
from charmlp.vocab import Vocabulary
from charmlp.windows import SPLIT_NAMES, build_windows, check_fractions, split_words
from charmlp.words import read_words

log = logging.getLogger("charmlp")


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


class NamesDataModule(L.LightningDataModule):
    """Words -> Vocabulary -> 80/10/10 split -> context windows; the train loader yields a MinibatchSampler.

    Each Lightning training step draws from the sampler as many minibatches as it makes updates, so a
    "batch" here is the sampler itself, not a tensor.
    """

    def __init__(
        self,
        path: str,
        block_size: int = 3,
        batch_size: int = 32,
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 42,
        seed: int = 0,
        eval_batch_size: int = 65536,
    ) -> None:
        super().__init__()
        for name, value in (
            ("data.block_size", block_size),
            ("data.batch_size", batch_size),
            ("data.eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise CharmlpError(f"{name} must be at least 1, got {value}")
        self.path, self.block_size, self.batch_size = str(path), block_size, batch_size
        self.splits, self.split_seed, self.seed = check_fractions(splits), split_seed, seed
        self.eval_batch_size = eval_batch_size
        self.words: dict[str, list[str]] = {}
        self.windows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.vocab: Vocabulary | None = None
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        words = read_words(self.path)
        self.vocab = Vocabulary.from_words(words)  # from all the data, so val/test hold no unknown character
        self.words = split_words(words, self.splits, self.split_seed)
        self.windows = {name: build_windows(self.words[name], self.vocab, self.block_size) for name in SPLIT_NAMES}

    def train_dataloader(self) -> Iterator[MinibatchSampler]:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        X, Y = (t.to(device) for t in self.windows["train"])
        self._generator = torch.Generator(device=device).manual_seed(self.seed + rank)  # ranks draw apart
        if self._generator_state is not None:
            self.restore_generator(self._generator_state, device, rank)
        sampler = MinibatchSampler(X, Y, self.batch_size, self._generator)
        while True:
            yield sampler

    def val_dataloader(self) -> SplitBatches:
        return self.split_batches("val")

    def test_dataloader(self) -> SplitBatches:
        return self.split_batches("test")

    def split_batches(self, name: str) -> SplitBatches:
        """Any split in evaluation batches (the train split too, for the final train loss)."""
        return SplitBatches(*self.windows[name], self.eval_batch_size)

    def state_dict(self) -> dict:
        """The minibatch generator (for exact resume), plus the vocabulary and split words for sample.py."""
        state = {"vocab": self.vocab.to_dict(), "words": {name: "\n".join(ws) for name, ws in self.words.items()}}
        if self._generator is not None:
            state["generator"] = self._generator.get_state()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # every rank takes part in a save (rank 0 writes): keep each rank's generator for resume
                states: list = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(states, state["generator"])
                state["generators"] = states
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if self.vocab is not None and "vocab" in state_dict and Vocabulary.from_dict(state_dict["vocab"]) != self.vocab:
            raise CharmlpError(
                f"the checkpoint was trained on other characters than {self.path} holds; resume with its own data.path"
            )
        per_rank = state_dict.get("generators")
        if per_rank and self.trainer is not None and len(per_rank) == self.trainer.world_size:
            self._generator_state = per_rank[self.trainer.global_rank].clone()
        else:
            self._generator_state = state_dict.get("generator")
        if self._generator is not None and self._generator_state is not None:
            self.restore_generator(self._generator_state, self._generator.device, 0)

    def restore_generator(self, state: torch.Tensor, device: torch.device, rank: int) -> None:
        """Continue the saved minibatch sequence; a state from another device type (a GPU checkpoint
        resumed on the CPU, or back) cannot be restored, so draw a new sequence seeded by seed, rank and step."""
        try:
            self._generator.set_state(state)
        except RuntimeError:  # a CPU generator's state is 5056 bytes, a CUDA one's 16: no conversion exists
            step = self.trainer.global_step if self.trainer is not None else 0
            self._generator.manual_seed(hash((self.seed, rank, step)) & (2**63 - 1))
            log.warning(
                "the checkpoint's minibatch generator belongs to another device type than %s: "
                "resuming with new random minibatches (seeded by data.seed, rank and step %d)",
                device.type,
                step,
            )
