"""Torch networks from the layer library (charmlp.model.layers): any family's LayerNet, and the part-2 MLP with its
hand-written SGD step."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from charmlp.errors import CharmlpError
from charmlp.model import layers as L

TANH_GAIN = 5 / 3  # keeps tanh pre-activations at unit scale under the "scaled" init


DROPOUT_BITS = 15  # resolution of the CPU dropout mask: p is rounded to a multiple of 2^-15


def dropout(h: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted dropout; on the CPU with a mask cut from 64-bit random numbers, four elements per draw.

    torch's CPU dropout draws one Mersenne Twister number per element: 4 ms for a 256 x 1024 layer, a third
    of an update of experiment=best. Each 64-bit draw here gives four 15-bit uniform numbers (the top bit of
    every 16-bit quarter is dropped), 8x less generator work. The keep probability is rounded to a multiple
    of 2^-15 and the survivors are scaled by that rounded value, so each element's expectation is unchanged.
    Other devices keep F.dropout. Both draw from torch's global generator, so a seed fixes the masks.
    """
    if h.device.type != "cpu":
        return F.dropout(h, p)
    n = h.numel()
    draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_()
    uniform = draws.view(torch.int16)[:n].view(h.shape).bitwise_and_(2**DROPOUT_BITS - 1)
    threshold = min(round(p * 2**DROPOUT_BITS), 2**DROPOUT_BITS - 1)  # p near 1 still keeps a few
    keep = uniform >= threshold
    return h * keep.to(h.dtype).mul_(2**DROPOUT_BITS / (2**DROPOUT_BITS - threshold))


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
                "model.fold_embedding=true needs the layers to start embedding, flatten, linear; set it to false"
            )
        self.fold_embedding = bool(fold_embedding)
        for layer in self.stack:
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

    def _apply(self, fn, recurse=True):  # .to(device) replaces buffers: look them up afresh
        self._bound = None
        return super()._apply(fn, recurse)

    def bound(self) -> list[tuple[L.Layer, dict[str, torch.Tensor]]]:
        """Each layer with its tensors by role (cached: looking them up per update shows at this size)."""
        if self._bound is None:
            self._bound = L.bind(self.stack, dict(self.named_parameters()) | dict(self.named_buffers()))
        return self._bound

    @property
    def embedding(self) -> torch.Tensor:
        """The first layer's table (C), one row per character."""
        return self.bound()[0][1]["weight"]

    @property
    def has_running_stats(self) -> bool:
        return any(layer.buffers for layer in self.stack)

    def forward(self, idx: torch.Tensor, trace: list | None = None) -> torch.Tensor:
        """idx: (batch, block_size) integer ids -> logits (batch, vocab_size); `trace` as in layers.forward
        (folded, the first three layers' outputs are not in it)."""
        bound = self.bound()
        if self.fold_embedding:
            return L.forward(bound[3:], torch, folded_linear(bound[:3], idx), self.training, trace)
        return L.forward(bound, torch, idx, self.training, trace)


def _foldable(stack: Sequence[L.Layer]) -> bool:
    return len(stack) >= 3 and [type(layer) for layer in stack[:3]] == [L.Embedding, L.FlattenConsecutive, L.Linear]


def folded_linear(bound: Sequence[tuple[L.Layer, dict[str, torch.Tensor]]], idx: torch.Tensor) -> torch.Tensor:
    """Embedding, flatten(n), linear, computed as n table lookups per output step (model.fold_embedding).

    The linear layer sees n embeddings side by side, so its output is a sum of n products, one per position
    j: C[idx_j] @ W_j = (C @ W_j)[idx_j], W_j the rows of W that position meets. The n tables C @ W_j (vocab
    x out each) cost n x vocab x emb x out multiplications per update, and the lookups one addition per id
    and output: with experiment=best's 512 x 10 ids of 32 numbers into 2048 units, 18 million against the
    plain product's 335 million (and as much again in its backward). The same numbers up to rounding.
    """
    (embedding, e), (flatten, _), (linear, w) = bound
    n, vocab, out = flatten.n, embedding.num, linear.fan_out
    tables = torch.einsum("ve,neo->nvo", e["weight"], w["weight"].view(n, embedding.dim, out))
    B, T = idx.shape
    ids = idx.reshape(-1, n) + torch.arange(0, n * vocab, vocab, device=idx.device)  # row j*vocab + id in the stack
    y = F.embedding_bag(ids, tables.reshape(n * vocab, out), mode="sum")
    y = y.view(B, T // n, out) if n < T else y
    return y + w["bias"] if linear.bias else y


class MLP(LayerNet):
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
        for name, value in (
            ("vocab_size", vocab_size),
            ("data.block_size", block_size),
            ("model.emb_dim", emb_dim),
            ("model.hidden_dim", hidden_dim),
            ("model.num_hidden", num_hidden),
        ):
            if value < 1:
                raise CharmlpError(f"{name} must be at least 1, got {value}")
        if not 0 <= dropout < 1:
            raise CharmlpError(f"model.dropout must be in [0, 1), got {dropout}")
        if init not in ("normal", "scaled"):
            raise CharmlpError(f"model.init must be 'normal' (the seed's N(0, 1)) or 'scaled', got {init!r}")
        stack = L.mlp(vocab_size, block_size, emb_dim, hidden_dim, num_hidden, dropout)
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


def build_network(model: dict) -> LayerNet:
    """The network a model config describes: its `layers` list (model=bn_mlp, wavenet, ...) or model=mlp's MLP.

    `vocab_size` and `block_size` come from the data; a layer family's other keys (emb_dim, ...) only feed
    its list through interpolation.
    """
    if "layers" in model:
        stack = L.build(model["layers"], model["vocab_size"], model["block_size"])
        return LayerNet(stack, model["block_size"], fold_embedding=model.get("fold_embedding", False))
    return MLP(**model)
