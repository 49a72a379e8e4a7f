"""Generating and scoring names with a trained network: numpy only (no torch import, no Lightning, no data).

The network is its layers' numpy forward (model.layers); generation follows the seed's loop for many names at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from charmlp.data.vocab import BOUNDARY, Vocabulary
from charmlp.errors import CharmlpError
from charmlp.model import families, numpy_ops
from charmlp.model import layers as layer_lib
from charmlp.model.layers import Layer


@dataclass(frozen=True)
class Network:
    """A trained network's evaluation-mode forward over numpy arrays: its layers (charmlp.model.layers), the same
    forward training runs in torch, and their state by name (C, W1, ... or layers.I.ROLE)."""

    layers: tuple[Layer, ...]
    state: Mapping[str, np.ndarray]
    block_size: int
    sequence: bool = False  # a sequence family: logits at every position of its input (else one per window)

    @classmethod
    def from_state(cls, model: Mapping[str, Any], state: Mapping[str, np.ndarray], vocab_size: int) -> Network:
        """From a checkpoint's model config (hyper_parameters.model) and its network's state, as numpy arrays.

        Both may come from any file: every array must have the shape the config gives it, else a CharmlpError
        names it. Nothing is allocated from the config's numbers.
        """
        block_size = model.get("block_size") if isinstance(model, Mapping) else None
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise CharmlpError(f"block_size must be a positive integer, got {str(block_size)[:40]}")
        try:
            layers = families.layers_of(model, vocab_size, block_size)
            wanted = {key: layer.shapes()[role] for layer in layer_lib.walk(layers) for role, key in layer.keys.items()}
            sequence = layer_lib.predicts_every_step(layers, block_size)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise CharmlpError(f"the model config does not describe a network ({str(err)[:80]})") from None
        arrays = {}
        for key, shape in wanted.items():
            arrays[key] = _weights(state, key)
            if arrays[key].shape != shape:
                raise CharmlpError(f"{key} has shape {arrays[key].shape}; the model config needs {shape}")
        return cls(tuple(layers), arrays, block_size, sequence)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        """The layers' own forward in numpy: (n, block_size) windows -> (n, vocabulary) logits, or for a sequence
        family (n, T) ids, T <= block_size -> (n, T, vocabulary)."""
        return layer_lib.forward(layer_lib.bind(self.layers, self.state), numpy_ops, ids)

    def logits(self, context: np.ndarray) -> np.ndarray:
        """The next character's logits, (n, vocabulary), after each row of `context` (start() and then advance())."""
        out = self.forward(context)
        return out[:, -1] if self.sequence else out

    def start(self, n: int) -> np.ndarray:
        """n contexts before the first character: a window of '.' (block_size of them), or a sequence of one '.'."""
        return np.zeros((n, 1 if self.sequence else self.block_size), dtype=np.int64)

    def advance(self, context: np.ndarray, ix: np.ndarray) -> np.ndarray:
        """Each context with the id drawn after it: a window slides; a sequence grows, its first ids dropped past
        block_size (makemore.py's crop: the positions it was trained on)."""
        return np.concatenate([context, ix.reshape(-1, 1)], axis=1)[:, -self.block_size :]


def _weights(state: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A float parameter as float32 (float64 stays float64): fp16 and bf16 weights compute as fp32 ones do."""
    weights = state.get(name)
    if not isinstance(weights, np.ndarray) or not np.issubdtype(weights.dtype, np.floating):
        raise CharmlpError(f"{name} is missing or not a float tensor")
    weights = weights.astype(np.promote_types(weights.dtype, np.float32), copy=False)
    if not np.isfinite(weights).all():
        raise CharmlpError(f"{name} holds NaN or infinite values")
    return weights


@dataclass(frozen=True)
class Sample:
    name: str
    # natural log-probability of the name and its end token under the sampling distribution (temperature and
    # top_k applied); for greedy decoding (temperature 0), under the model itself (temperature 1)
    logprob: float
    finished: bool  # False when max_len cut the name before the model chose the end token


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis: (n, vocabulary), or (n, T, vocabulary) for a sequence family's every position."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def generate(
    net: Network,
    vocab: Vocabulary,
    n: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    max_len: int = 50,
    prefix: str = "",
) -> list[Sample]:
    """The seed's sampling loop for n names at once: context of '.', softmax, multinomial, slide, stop at '.'.

    All unfinished names advance together; a finished one drops out of the batch. Draws come from `rng`
    only, so a seed gives the same names every time. temperature=0 is greedy decoding: always the likeliest
    next character (the lowest id on a tie), no draw from `rng`, so all n names are the same name; top_k
    changes nothing there. Memory grows with the longest name drawn, not with max_len.
    """
    if not np.isfinite(temperature) or temperature < 0:
        raise CharmlpError(
            f"temperature must be a finite number >= 0 (0 is greedy: the likeliest character), got {temperature}"
        )
    if top_k is not None and top_k < 1:
        raise CharmlpError(f"top_k must be at least 1, got {top_k}")
    if max_len <= len(prefix):
        raise CharmlpError(f"max_len ({max_len}) must be longer than the prefix {prefix!r}")
    prefix_ids = encode_word(vocab, prefix, "prefix")
    if temperature == 0:  # deterministic: one name, n times
        return _generate(net, vocab, 1, rng, 0.0, None, max_len, prefix, prefix_ids) * n
    return _generate(net, vocab, n, rng, temperature, top_k, max_len, prefix, prefix_ids)


def _generate(
    net: Network,
    vocab: Vocabulary,
    n: int,
    rng: np.random.Generator,
    temperature: float,
    top_k: int | None,
    max_len: int,
    prefix: str,
    prefix_ids: list[int],
) -> list[Sample]:
    context = net.start(n)
    for ix in prefix_ids:  # the prefix goes in as if the model had drawn it
        context = net.advance(context, np.full(n, ix))
    steps = max_len - len(prefix)
    id_type = np.min_scalar_type(len(vocab) - 1)
    drawn = np.zeros((n, min(steps, 32)), dtype=id_type)  # widened as names grow: memory follows the longest
    logprob = np.zeros(n)
    active = np.arange(n)
    for t in range(steps):
        if t == drawn.shape[1]:
            drawn = np.concatenate([drawn, np.zeros((n, min(steps, 2 * t) - t), dtype=id_type)], axis=1)
        # names share their first contexts (all start from '.'): run the network once per distinct context
        distinct, inverse = np.unique(context[active], axis=0, return_inverse=True)
        logits = net.logits(distinct).astype(np.float64)[inverse.reshape(-1)]
        if temperature == 0:  # greedy; its logprob is the model's own (temperature 1)
            logp = log_softmax(logits)
            ix = logits.argmax(axis=1)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[1]:
                kth = np.partition(logits, -top_k, axis=1)[:, -top_k, None]
                logits = np.where(logits < kth, -np.inf, logits)
            logp = log_softmax(logits)
            cdf = np.cumsum(np.exp(logp), axis=1)
            u = rng.random(len(active))[:, None] * cdf[:, -1:]  # multinomial by inverse CDF
            ix = np.minimum((cdf <= u).sum(axis=1), logits.shape[1] - 1)
        logprob[active] += logp[np.arange(len(active)), ix]
        drawn[active, t] = ix
        drawn_now = np.zeros(n, dtype=np.int64)
        drawn_now[active] = ix
        context = net.advance(context, drawn_now)  # finished rows move on too, unread
        active = active[ix != 0]
        if not len(active):
            break
    drawn = drawn[:, : t + 1]  # the steps taken: a row without a 0 was cut by max_len
    return [_to_sample(prefix, row, lp, vocab) for row, lp in zip(drawn.tolist(), logprob.tolist())]


def encode_word(vocab: Vocabulary, word: str, what: str = "the word") -> list[int]:
    """A name's ids: refused in one line if it holds the end token '.' (id 0) or characters outside the vocabulary."""
    if BOUNDARY in word:
        raise CharmlpError(
            f"{what} {word!r} contains {BOUNDARY!r}, the end-of-name token (vocabulary id 0), which no name can "
            f"hold; remove it"
        )
    return vocab.encode(word)


def _to_sample(prefix: str, row: list[int], logprob: float, vocab: Vocabulary) -> Sample:
    finished = 0 in row
    ids = row[: row.index(0)] if finished else row
    return Sample(prefix + vocab.decode(ids), logprob, finished)


def score(net: Network, vocab: Vocabulary, words: Sequence[str]) -> list[tuple[float, int]]:
    """For each word: (summed negative log-likelihood in nats, predictions made = len(word) + 1).

    Summed over a split and divided by its predictions, this is the split's cross-entropy loss.
    """
    results: list[tuple[float, int]] = []
    step = 65536 // net.block_size if net.sequence else 65536  # about 65,536 predictions a forward pass
    for start in range(0, len(words), step):
        rows = [[0] + encode_word(vocab, w) + [0] for w in words[start : start + step]]
        nll = _sequence_nll(net, rows) if net.sequence else _window_nll(net, rows)
        counts = [len(r) - 1 for r in rows]
        sums = np.add.reduceat(nll, np.cumsum([0] + counts[:-1]))
        results.extend(zip(sums.tolist(), counts))
    return results


def _window_nll(net: Network, rows: list[list[int]]) -> np.ndarray:
    """Every prediction's nll, word after word: one context window each (the lecture's examples)."""
    padded = [np.array([0] * (net.block_size - 1) + r) for r in rows]
    windows = np.concatenate([np.lib.stride_tricks.sliding_window_view(r, net.block_size + 1) for r in padded])
    logp = log_softmax(net.logits(windows[:, :-1]).astype(np.float64))
    return -logp[np.arange(len(windows)), windows[:, -1]]


def _sequence_nll(net: Network, rows: list[list[int]]) -> np.ndarray:
    """Every prediction's nll, word after word, from the words' own forward passes (all positions at once). A word
    longer than the model's block_size - 1 is read as generation reads it: past block_size, each prediction sees
    the last block_size ids."""
    fits = [len(r) - 1 <= net.block_size for r in rows]
    short = [r for r, ok in zip(rows, fits) if ok]
    if short:
        T = max(len(r) for r in short) - 1
        ids = np.zeros((len(short), T), dtype=np.int64)
        for i, r in enumerate(short):
            ids[i, : len(r) - 1] = r[:-1]
        logp = log_softmax(net.forward(ids).astype(np.float64))
    per_word: list[np.ndarray] = []
    k = 0
    for r, ok in zip(rows, fits):
        targets = np.array(r[1:])
        if ok:
            per_word.append(-logp[k, np.arange(len(targets)), targets])
            k += 1
            continue
        contexts = [np.array(r[max(0, t + 1 - net.block_size) : t + 1]) for t in range(len(targets))]
        logits = np.stack([net.logits(c[None])[0] for c in contexts]).astype(np.float64)
        per_word.append(-log_softmax(logits)[np.arange(len(targets)), targets])
    return np.concatenate(per_word)
