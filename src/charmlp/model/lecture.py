"""makemore part 2's MLP in torch, with its state under the lecture's names: the network of model=mlp
(charmlp.model.families). Its layers' backward passes are the library's (charmlp.model.layers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from charmlp.model import families
from charmlp.model.network import LayerNet

TANH_GAIN = 5 / 3  # keeps tanh pre-activations at unit scale under the "scaled" init


class LectureMLP(LayerNet):
    """Embedding table C, tanh hidden layer(s), linear output: logits for the next character.

    Parameters keep the lecture's names: C (vocab x emb_dim), W1/b1 the first hidden layer, and the last
    W/b pair the output layer (W2/b2 with one hidden layer, 11,897 numbers at the defaults).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 3,
        emb_dim: int = 10,
        hidden_dim: int = 200,
        num_hidden: int = 1,
        dropout: float = 0.0,
        init: str = "normal",
        fold_embedding: bool = False,
    ) -> None:
        config = dict(emb_dim=emb_dim, hidden_dim=hidden_dim, num_hidden=num_hidden, dropout=dropout, init=init)
        stack = families.layers_of(config, vocab_size, block_size)  # checks every value
        # N(0, 1) in the seed's order C, W1, b1, W2, b2: under the same seed these are the lecture's numbers
        values = {
            key: torch.randn(shape)
            for layer in stack
            for key, shape in zip(layer.keys.values(), layer.shapes().values())
        }
        super().__init__(stack, block_size, values, fold_embedding)
        self.dropout = dropout
        self.num_layers = num_hidden + 1
        self._layer_names = [(f"W{i}", f"b{i}") for i in range(1, self.num_layers + 1)]
        if init == "scaled":
            self._scale_init()

    @classmethod
    def from_config(cls, model: Mapping[str, Any]) -> LectureMLP:
        """model=mlp's network from its config (its __init__ builds and checks the layers through the registry)."""
        keys = ("vocab_size", "block_size", "emb_dim", "hidden_dim", "num_hidden", "dropout", "init", "fold_embedding")
        return cls(**{k: model[k] for k in keys if k in model})

    @torch.no_grad()
    def _scale_init(self) -> None:
        """Kaiming-style tanh init (makemore part 3): unit-scale pre-activations, near-uniform first logits."""
        for i in range(1, self.num_layers + 1):
            W, b = self.layer(i)
            is_output = i == self.num_layers
            W.mul_(0.01 if is_output else TANH_GAIN / math.sqrt(W.shape[0]))
            b.mul_(0.0 if is_output else 0.01)

    def layer(self, i: int) -> tuple[nn.Parameter, nn.Parameter]:
        return getattr(self, f"W{i}"), getattr(self, f"b{i}")
