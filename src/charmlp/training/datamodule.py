"""NamesDataModule, the data's Lightning face: reads the word list, builds the vocabulary, the split and the windows
(charmlp.data), serves minibatches to each rank, and keeps the minibatch stream in checkpoints for exact resume."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import lightning as L
import torch

from charmlp.data.batches import UNSEEN_SPLITS, MinibatchSampler, SplitBatches, stream_seed, unseen_words
from charmlp.data.vocab import Vocabulary
from charmlp.data.windows import (
    MODES,
    SPLIT_NAMES,
    build_sequences,
    build_windows,
    check_fractions,
    longest_sequence,
    split_words,
)
from charmlp.data.words import read_words
from charmlp.errors import CharmlpError

log = logging.getLogger("charmlp")


class NamesDataModule(L.LightningDataModule):
    """Words -> Vocabulary -> 80/10/10 split -> context windows (mode=windows) or whole words (mode=words, the
    sequence families'); the train loader yields a MinibatchSampler.

    Each Lightning training step draws from the sampler as many minibatches as it makes updates, so a
    "batch" here is the sampler itself, not a tensor.
    """

    def __init__(
        self,
        path: str,
        block_size: int | None = 3,
        batch_size: int = 32,
        splits: Sequence[float] = (0.8, 0.1, 0.1),
        split_seed: int = 42,
        seed: int = 0,
        eval_batch_size: int = 8192,
        dedup: bool = False,
        mode: str = "windows",
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise CharmlpError(f"data.mode must be one of {', '.join(MODES)}, got {mode!r}")
        if block_size is None and mode == "windows":
            raise CharmlpError("data.block_size=null (the longest word + 1) is for data.mode=words; give a number")
        for name, value in (
            ("data.block_size", 1 if block_size is None else block_size),
            ("data.batch_size", batch_size),
            ("data.eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise CharmlpError(f"{name} must be at least 1, got {value}")
        self.path, self.block_size, self.batch_size = str(path), block_size, batch_size
        self.splits, self.split_seed, self.seed = check_fractions(splits), split_seed, seed
        self.eval_batch_size, self.dedup, self.mode = eval_batch_size, bool(dedup), mode
        self.words: dict[str, list[str]] = {}
        self.windows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.vocab: Vocabulary | None = None
        self._generator: torch.Generator | None = None
        self._saved: dict | None = None  # a checkpoint's state, restored when the train loader starts

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        words = read_words(self.path)
        if self.dedup:  # each word once (its first place in the file), so no val/test word is also a train word
            words = list(dict.fromkeys(words))
        vocab = Vocabulary.from_words(words)  # from all the data, so val/test hold no unknown character
        if self.block_size is None:  # makemore.py's: every word fits, from all the data
            self.block_size = longest_sequence(words)
        self.use_split(vocab, split_words(words, self.splits, self.split_seed))

    def use_split(self, vocab: Vocabulary, words: dict[str, list[str]]) -> None:
        """The vocabulary and the train/val/test words to serve (setup's, or a checkpoint's own: eval.py), with
        each held-out split's unseen words (not also training words: duplicates in the file) beside it."""
        self.vocab, self.words = vocab, {name: list(words[name]) for name in SPLIT_NAMES}
        for name in UNSEEN_SPLITS:
            self.words[f"{name}_unseen"] = unseen_words(self.words[name], self.words["train"])
        build = build_sequences if self.mode == "words" else build_windows
        self.windows = {name: build(ws, self.vocab, self.block_size) for name, ws in self.words.items()}

    def train_dataloader(self) -> Iterator[MinibatchSampler]:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        rank = self.trainer.global_rank if self.trainer is not None else 0
        X, Y = (t.to(device) for t in self.windows["train"])
        self._generator = torch.Generator(device=device).manual_seed(self.seed + rank)  # ranks draw apart
        self.restore_generator(device, rank)
        sampler = MinibatchSampler(X, Y, self.batch_size, self._generator)
        while True:
            yield sampler

    def val_dataloader(self) -> SplitBatches:
        return self.split_batches("val")

    def test_dataloader(self) -> SplitBatches:
        return self.split_batches("test")

    def split_batches(self, name: str) -> SplitBatches:
        """Any split in evaluation batches: train, val, test, or val_unseen / test_unseen."""
        return SplitBatches(*self.windows[name], self.eval_batch_size)

    def state_dict(self) -> dict:
        """The minibatch generator (for exact resume), plus the vocabulary and split words for sample.py."""
        state = {
            "vocab": self.vocab.to_dict(),
            "words": {name: "\n".join(self.words[name]) for name in SPLIT_NAMES},
            "recipe": {
                "block_size": self.block_size,
                "batch_size": self.batch_size,
                "seed": self.seed,
                "mode": self.mode,
            },
        }
        if self._generator is not None:
            state["generator"] = self._generator.get_state()
            state["world_size"], state["device_type"] = 1, self._generator.device.type
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # every rank takes part in a save (rank 0 writes): keep each rank's generator for resume
                states: list = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(states, state["generator"])
                state["generators"], state["world_size"] = states, len(states)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if self.vocab is not None and "vocab" in state_dict and Vocabulary.from_dict(state_dict["vocab"]) != self.vocab:
            raise CharmlpError(
                f"the checkpoint was trained on other characters than {self.path} holds; resume with its own data.path"
            )
        self._saved = state_dict
        if self._generator is not None:  # loaded after the train loader started (not Lightning's order)
            self.restore_generator(self._generator.device, self.trainer.global_rank if self.trainer else 0)

    def restore_generator(self, device: torch.device, rank: int) -> None:
        """Continue the saved minibatch stream of this rank. Where the checkpoint cannot say which stream this rank
        had (another world size, or another device type, whose generator state has another form), every rank draws
        a new stream seeded by data seed, rank and update, distinct per rank and the same on every such resume."""
        saved = self._saved
        if saved is None or saved.get("generator") is None:
            return
        world_size = self.trainer.world_size if self.trainer is not None else 1
        per_rank = saved.get("generators") or [saved["generator"]]
        saved_world = int(saved.get("world_size", len(per_rank)))
        state = per_rank[rank] if saved_world == world_size and len(per_rank) == world_size else None
        why = f"the checkpoint was written by {saved_world} process(es), this run has {world_size}"
        if state is not None:
            try:
                self._generator.set_state(state)
                return
            except RuntimeError:  # a CPU generator's state is 5056 bytes, a CUDA one's 16: no conversion exists
                why = f"the checkpoint's minibatch generator belongs to another device type than {device.type}"
        step = self.trainer.global_step if self.trainer is not None else 0
        self._generator.manual_seed(stream_seed(self.seed, rank, step))
        if rank == 0:
            log.warning(
                "%s: each rank resumes with new random minibatches (seeded by seed %d, its rank and update %d)",
                why,
                self.seed,
                step,
            )
