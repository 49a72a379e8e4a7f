"""The model families: which network a model config means, its layers and its checks, all in one place.

Training (charmlp.model.network.build_network) and sampling (charmlp.sampling.generate.Network) both ask this
registry, so a family is built and validated the same way in torch and in numpy, and a new family is one entry
here plus its layers in charmlp.model.layers. torch-free: sample.py imports it.

- `mlp` (conf/model/mlp.yaml): the lecture's part-2 MLP from its keys emb_dim, hidden_dim, num_hidden, dropout,
  init; its state keeps the lecture's names C, W1, b1, ... (its layers, and their backward, are the library's).
- `layers` (conf/model/bn_mlp.yaml, wavenet.yaml, or any `model.layers` list): a list of library layers, its
  state named layers.I.ROLE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from charmlp.errors import CharmlpError
from charmlp.model.layers import Dropout, Embedding, FlattenConsecutive, Layer, Linear, Tanh, build

INITS = ("normal", "scaled")  # model=mlp's init: the seed's N(0, 1), or makemore part 3's scaled one


@dataclass(frozen=True)
class Family:
    """One entry of the registry: how a config becomes validated layers, and which torch class trains them."""

    name: str
    layers: Callable[[Mapping[str, Any], int, int], list[Layer]]  # (model config, vocab_size, block_size)
    network: str  # the torch module that trains it, "charmlp.model.MODULE:CLASS" (imported by training only)


def lecture_mlp(
    vocab_size: int, block_size: int, emb_dim: int, hidden_dim: int, num_hidden: int = 1, dropout: float = 0.0
) -> list[Layer]:
    """The part-2 MLP as layers, its state named as in the lecture: C, W1, b1, ..., Wk, bk."""
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
    layers: list[Layer] = [Embedding(vocab_size, emb_dim), FlattenConsecutive(block_size)]
    layers[0].keys = {"weight": "C"}
    widths = [block_size * emb_dim] + [hidden_dim] * num_hidden + [vocab_size]
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:]), start=1):
        linear = Linear(fan_in, fan_out)
        linear.keys = {"weight": f"W{i}", "bias": f"b{i}"}
        layers.append(linear)
        if i < len(widths) - 1:
            tanh = Tanh()
            tanh.name = f"h{i}"  # the lecture's h: hidden layer i's activations
            layers += [tanh, Dropout(dropout)] if dropout else [tanh]
    return layers


def _mlp_layers(model: Mapping[str, Any], vocab_size: int, block_size: int) -> list[Layer]:
    init = model.get("init", "normal")
    if init not in INITS:
        raise CharmlpError(f"model.init must be 'normal' (the seed's N(0, 1)) or 'scaled', got {init!r}")
    keys = ("emb_dim", "hidden_dim", "num_hidden", "dropout")
    return lecture_mlp(vocab_size, block_size, **{k: model[k] for k in keys if k in model})


def _listed_layers(model: Mapping[str, Any], vocab_size: int, block_size: int) -> list[Layer]:
    return build(model["layers"], vocab_size, block_size)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("mlp", _mlp_layers, "charmlp.model.lecture:LectureMLP"),
        Family("layers", _listed_layers, "charmlp.model.network:LayerNet"),
    )
}


def family_of(model: Mapping[str, Any]) -> Family:
    """The family a model config describes: a `layers` list is the layer family, else the lecture's MLP (the
    configs of every checkpoint so far say it by their shape, so the rule reads old checkpoints too)."""
    return FAMILIES["layers" if "layers" in model else "mlp"]


def layers_of(model: Mapping[str, Any], vocab_size: int, block_size: int) -> list[Layer]:
    """A model config's validated layers, each sized by the one before it (a CharmlpError names what is wrong)."""
    return family_of(model).layers(model, vocab_size, block_size)
