"""Generating and scoring names with an MLP and a Vocabulary: pure torch, no Lightning, no data file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charmlp.errors import CharmlpError
from charmlp.mlp import MLP
from charmlp.vocab import Vocabulary
from charmlp.windows import build_windows


@dataclass(frozen=True)
class Sample:
    name: str
    logprob: float  # natural log-probability of the name and its end token under the model
    finished: bool  # False when max_len cut it before the model chose the end token


@torch.no_grad()
def generate(
    model: MLP,
    vocab: Vocabulary,
    n: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_len: int = 50,
    prefix: str = "",
) -> list[Sample]:
    """The seed's sampling loop for n names at once: context of '.', softmax, multinomial, slide, stop at '.'.

    All contexts advance together; a finished name keeps drawing (its draws are ignored) so that every row
    uses the generator the same way, which keeps results reproducible for a seed and device.
    """
    if temperature <= 0:
        raise CharmlpError(f"temperature must be positive, got {temperature}")
    if top_k is not None and top_k < 1:
        raise CharmlpError(f"top_k must be at least 1, got {top_k}")
    if max_len <= len(prefix):
        raise CharmlpError(f"max_len ({max_len}) must be longer than the prefix {prefix!r}")
    model.eval()
    device = model.C.device
    prefix_ids = vocab.encode(prefix)
    context = torch.zeros(n, model.block_size, dtype=torch.long, device=device)
    for ix in prefix_ids:  # the prefix is fed in as if the model had drawn it
        context = torch.cat([context[:, 1:], torch.full((n, 1), ix, device=device)], dim=1)
    steps = max_len - len(prefix)
    drawn = torch.zeros(n, steps, dtype=torch.long, device=device)
    logprob = torch.zeros(n, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(steps):
        logits = model(context) / temperature
        if top_k is not None and top_k < logits.shape[1]:
            kth = torch.topk(logits, top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        logp = F.log_softmax(logits, dim=1)
        ix = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
        logprob += torch.where(done, 0.0, logp.gather(1, ix[:, None]).squeeze(1))
        ix = ix.masked_fill(done, 0)
        drawn[:, t] = ix
        done |= ix == 0
        if t % 8 == 7 and bool(done.all()):  # an occasional host sync, not one per character
            break
        context = torch.cat([context[:, 1:], ix[:, None]], dim=1)
    return [_to_sample(prefix, row, lp, vocab) for row, lp in zip(drawn.tolist(), logprob.tolist())]


def _to_sample(prefix: str, row: list[int], logprob: float, vocab: Vocabulary) -> Sample:
    finished = 0 in row
    ids = row[: row.index(0)] if finished else row
    return Sample(prefix + vocab.decode(ids), logprob, finished)


@torch.no_grad()
def score(model: MLP, vocab: Vocabulary, words: Sequence[str]) -> list[tuple[float, int]]:
    """For each word: (summed negative log-likelihood in nats, number of predictions = len(word) + 1).

    Summed over a split and divided by the predictions, this is exactly the split's cross-entropy loss.
    """
    model.eval()
    for word in words:
        vocab.encode(word)  # names any character the model has never seen
    X, Y = build_windows(words, vocab, model.block_size)
    X, Y = X.long().to(model.C.device), Y.long().to(model.C.device)
    nll = F.cross_entropy(model(X), Y, reduction="none").cpu() if len(Y) else torch.empty(0)
    counts = [len(w) + 1 for w in words]
    sums = torch.split(nll.double(), counts)
    return [(float(s.sum()), c) for s, c in zip(sums, counts)]
