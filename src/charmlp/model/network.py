"""Any family's torch network: a list of library layers (charmlp.model.layers) as an nn.Module, run through the
layers' own forward with torch as the array module (charmlp.model.torch_ops), and `build_network`, which asks the
family registry (charmlp.model.families) which network a config means."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from charmlp.errors import CharmlpError
from charmlp.model import layers as L
from charmlp.model import torch_ops
from charmlp.model.families import family_of, layers_of


class LayerNet(nn.Module):
    """A list of charmlp.model.layers as a torch module: each layer's parameters and buffers under their state names
    (`layers.I.ROLE`, or the MLP's C, W1, ...), the forward the layers' own, shared with sample.py's numpy."""

    def __init__(
        self,
        stack: Sequence[L.Layer],
        block_size: int,
        values: dict[str, torch.Tensor] | None = None,
        fold_embedding: bool = False,
    ) -> None:
        super().__init__()
        self.stack, self.block_size = list(stack), block_size
        if fold_embedding and not _foldable(self.stack):
            raise CharmlpError(
                "model.fold_embedding=true needs the layers (or an ensemble member's) to start embedding, flatten, "
                "linear or a windowed embedding, linear; set it to false"
            )
        self.fold_embedding = bool(fold_embedding)
        for layer in L.walk(self.stack):  # a residual's body layers hold its parameters
            initial = layer.init(torch) if values is None else {r: values[k] for r, k in layer.keys.items()}
            for role, key in layer.keys.items():
                *path, name = key.split(".")
                owner = self
                for part in path:  # layers.0.weight: a submodule per dotted part, so state names read as written
                    if part not in owner._modules:
                        owner.add_module(part, nn.Module())
                    owner = owner._modules[part]
                if role in layer.buffers:
                    owner.register_buffer(name, initial[role])
                else:
                    owner.register_parameter(name, nn.Parameter(initial[role]))
        self._bound: list[tuple[L.Layer, dict[str, torch.Tensor]]] | None = None

    @classmethod
    def from_config(cls, model: Mapping[str, Any]) -> LayerNet:
        """The network of a config's validated layers (families.layers_of), freshly initialised."""
        stack = layers_of(model, model["vocab_size"], model["block_size"])
        return cls(stack, model["block_size"], fold_embedding=model.get("fold_embedding", False))

    def _apply(self, fn, recurse=True):  # .to(device) replaces buffers: look them up afresh
        self._bound = None
        return super()._apply(fn, recurse)

    def bound(self) -> list[tuple[L.Layer, dict[str, torch.Tensor]]]:
        """Each layer with its tensors by role (cached: looking them up per update shows at this size)."""
        if self._bound is None:
            self._bound = L.bind(self.stack, dict(self.named_parameters()) | dict(self.named_buffers()))
            if self.fold_embedding:
                self._bound = _folded(self._bound)
        return self._bound

    @property
    def embedding(self) -> torch.Tensor:
        """The first embedding's table (C), one row per character (an ensemble's: its first member's)."""
        first = next(layer for layer in L.walk(self.stack) if isinstance(layer, L.Embedding))
        return self.get_parameter(first.keys["weight"])

    @property
    def has_running_stats(self) -> bool:
        return any(layer.buffers for layer in L.walk(self.stack))

    def forward(self, idx: torch.Tensor, trace: list | None = None) -> torch.Tensor:
        """idx: (batch, block_size) integer ids -> logits (batch, vocab_size), or (batch, T, vocab_size) for a sequence
        family (an ensemble while training: its members' logits stacked, members first); `trace` as in
        layers.forward (folded, the outputs of the layers a FoldedLinear stands for are not in it)."""
        return L.forward(self.bound(), torch_ops, idx, self.training, trace)


def _fold_length(stack: Sequence[L.Layer]) -> int:
    """How many first layers fold into table lookups: embedding, flatten, linear (3); a windowed embedding, linear
    (2); none (0)."""
    kinds = [type(layer) for layer in stack[:3]]
    if kinds == [L.Embedding, L.FlattenConsecutive, L.Linear] and not stack[0].window:
        return 3
    return 2 if kinds[:2] == [L.Embedding, L.Linear] and stack[0].window else 0


def _foldable(stack: Sequence[L.Layer]) -> bool:
    if stack and isinstance(stack[0], L.Ensemble):
        return any(_foldable(member) for member in stack[0].members)
    return _fold_length(stack) > 0


def _folded(bound: list[tuple[L.Layer, dict[str, Any]]]) -> list[tuple[L.Layer, dict[str, Any]]]:
    """The bound layers with their first ones (those of each ensemble member that has them) as one FoldedLinear."""
    first, tensors = bound[0]
    if isinstance(first, L.Ensemble):
        return [(first, {"bodies": [_folded(member) for member in tensors["bodies"]]}), *bound[1:]]
    n = _fold_length([layer for layer, _ in bound])
    return [(FoldedLinear(bound[:n]), {}), *bound[n:]] if n else bound


class FoldedLinear(L.Layer):
    """The first layers as table lookups (folded_linear): training's torch-only form of the same function; it holds
    the bound layers it stands for, whose parameters it reads."""

    def __init__(self, parts: Sequence[tuple[L.Layer, dict[str, torch.Tensor]]]) -> None:
        super().__init__()
        self.parts = list(parts)
        self.name = parts[-1][0].name

    def forward(self, xp: Any, p: Any, x: torch.Tensor, training: bool = False) -> torch.Tensor:
        return folded_linear(self.parts, x)


def folded_linear(bound: Sequence[tuple[L.Layer, dict[str, torch.Tensor]]], idx: torch.Tensor) -> torch.Tensor:
    """Embedding, flatten(n), linear (or a windowed embedding of n, linear), computed as n table lookups per output
    step (model.fold_embedding).

    The linear layer sees n embeddings side by side, so its output is a sum of n products, one per position
    j: C[idx_j] @ W_j = (C @ W_j)[idx_j], W_j the rows of W that position meets. The n tables C @ W_j (vocab
    x out each) cost n x vocab x emb x out multiplications per update, and the lookups one addition per id
    and output: with experiment=best_mlp's 512 x 10 ids of 32 numbers into 2048 units, 18 million against the
    plain product's 335 million (and as much again in its backward). The same numbers up to rounding.
    """
    (embedding, e), (linear, w) = bound[0], bound[-1]
    n = embedding.window or bound[1][0].n
    vocab, out = embedding.num, linear.fan_out
    tables = torch.einsum("ve,neo->nvo", e["weight"], w["weight"].view(n, embedding.dim, out))
    B, T = idx.shape
    if embedding.window:  # every position's window: (B, T, n)
        idx = torch_ops.causal_windows(idx, n)
    ids = idx.reshape(-1, n) + torch.arange(0, n * vocab, vocab, device=idx.device)  # row j*vocab + id in the stack
    y = F.embedding_bag(ids, tables.reshape(n * vocab, out), mode="sum")
    y = y.view(B, T, out) if embedding.window else y.view(B, T // n, out) if n < T else y
    return y + w["bias"] if linear.bias else y


def build_network(model: Mapping[str, Any]) -> LayerNet:
    """The network a model config describes (`vocab_size` and `block_size` come from the data), validated and
    built by its family's registry entry: model=mlp's LectureMLP, or a LayerNet of the config's `layers` list."""
    family = family_of(model)
    module, _, name = family.network.partition(":")
    network = getattr(importlib.import_module(module), name)
    return network.from_config(model)  # each class builds its layers through the registry, once
