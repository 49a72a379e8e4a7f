"""makemore part 2's MLP in torch, with its state under the lecture's names and its plain-SGD update written by
hand (makemore part 4's gradients): the network of model=mlp (charmlp.model.families)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
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

    @torch.no_grad()
    def sgd_step_(self, idx: torch.Tensor, targets: torch.Tensor, lr: float, weight_decay: float = 0.0) -> torch.Tensor:
        """One plain-SGD update on a minibatch with the gradients worked out by hand; returns the loss before it.

        The numbers of `F.cross_entropy` + `backward()` + `torch.optim.SGD(lr, weight_decay)` (makemore
        part 4 derives each line), without autograd's bookkeeping, which on a model this small costs more
        than the arithmetic. Each layer's gradient goes into its weights as soon as the layer below has
        used the old ones. Dropout needs autograd.
        """
        if self.dropout:
            raise ValueError("sgd_step_ has no dropout; train with autograd when model.dropout > 0")
        # plain dict lookups and builtin ops only: Python overhead is a third of the time at this size
        params, B = self._parameters, idx.shape[0]
        layers = [(params[w], params[b]) for w, b in self._layer_names]
        inputs = [F.embedding(idx, params["C"]).view(B, -1)]  # the input of each layer
        for W, b in layers[:-1]:
            inputs.append(torch.tanh(torch.addmm(b, inputs[-1], W)))
        W, b = layers[-1]
        logprobs = torch.log_softmax(torch.addmm(b, inputs[-1], W), dim=1)
        targets = targets.unsqueeze(1)
        loss = logprobs.gather(1, targets).mean().neg()
        # d(sum of losses)/d(logits) = softmax - one_hot; the 1/B of the mean goes into the step size
        grad_out = logprobs.exp_().scatter_add_(1, targets, torch.full((B, 1), -1.0, device=idx.device))
        step, decay = -lr / B, 1 - lr * weight_decay
        for i in range(len(layers) - 1, -1, -1):
            (W, b), x = layers[i], inputs[i]
            grad_in = grad_out @ W.T  # with W before its update
            if i > 0:
                grad_in.mul_(torch.rsub(x * x, 1))  # x = tanh(pre-activation), and tanh' = 1 - tanh^2
            if weight_decay:
                W.mul_(decay)
                b.mul_(decay)
            W.addmm_(x.T, grad_out, alpha=step)
            b.add_(grad_out.sum(0), alpha=step)
            grad_out = grad_in
        C = params["C"]
        if weight_decay:
            C.mul_(decay)
        C.index_add_(0, idx.reshape(-1), grad_out.view(-1, C.shape[1]), alpha=step)
        return loss
