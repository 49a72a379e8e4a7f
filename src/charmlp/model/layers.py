"""The layer library of makemore parts 3 and 5, each layer's forward written once for torch and numpy.

A layer here is its shapes and its math, in plain Python (no torch import, so sample.py stays fast). Its
`forward(xp, p, x, training)` takes the array module (`torch` or `numpy`), the layer's parameters and buffers
by role ("weight", "running_mean", ...) and the input: training runs it on torch tensors (network.LayerNet),
sample.py on numpy arrays, so a model family is defined once, as a list of layers in the config:

    layers:
      - {layer: embedding, dim: 24}
      - {layer: flatten, n: 2}
      - {layer: linear, out: 128, bias: false}
      - {layer: batchnorm}
      - {layer: tanh}
      - {layer: linear, gain: 0.1}          # out omitted: the vocabulary (the output layer)

Inputs flow as (batch, time, channels) until a flatten leaves one time step, then as (batch, channels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from charmlp.errors import CharmlpError


@dataclass(frozen=True)
class Shape:
    """What flows between layers, batch left out: `time` steps of `channels`, or one vector (time None)."""

    time: int | None
    channels: int


@dataclass
class Layer:
    """Base: no parameters, the identity. `keys` maps each role to its name in the model's state dict."""

    kind: ClassVar[str] = ""
    keys: dict[str, str] = field(default_factory=dict, init=False)
    name: str = field(default="", init=False)  # how diagnostics call its output: layers.4, or the MLP's h1

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's and buffer's shape, by role."""
        return {}

    buffers: ClassVar[tuple[str, ...]] = ()  # the roles that are running statistics, not trained

    def init(self, torch: Any) -> dict[str, Any]:
        """Initial values by role, drawn from torch's global generator (the run's seed fixes them)."""
        return {}

    def out_shape(self, shape: Shape) -> Shape:
        return shape

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return x


@dataclass
class Embedding(Layer):
    """A lookup table: ids (batch, time) -> (batch, time, dim). makemore's C."""

    num: int
    dim: int
    kind: ClassVar[str] = "embedding"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num, self.dim)}

    def init(self, torch: Any) -> dict[str, Any]:
        return {"weight": torch.randn(self.num, self.dim)}

    def out_shape(self, shape: Shape) -> Shape:
        return Shape(shape.time, self.dim)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return p["weight"][x]


@dataclass
class FlattenConsecutive(Layer):
    """Joins each n consecutive time steps into one: (batch, T, C) -> (batch, T/n, C*n); one step left -> (batch, C*n).

    n = T joins all of them: the part-2 MLP's concatenated embeddings. Part 5's hierarchy uses n = 2.
    """

    n: int
    kind: ClassVar[str] = "flatten"

    def out_shape(self, shape: Shape) -> Shape:
        if shape.time is None or shape.time % self.n:
            raise CharmlpError(f"flatten n={self.n} needs a number of time steps it divides, got {shape.time}")
        time = shape.time // self.n
        return Shape(None if time == 1 else time, shape.channels * self.n)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        B, T, C = x.shape
        return x.reshape(B, C * T) if self.n == T else x.reshape(B, T // self.n, C * self.n)


@dataclass
class Linear(Layer):
    """x @ weight (+ bias) on the last dim. weight ~ N(0, 1) * std, std = gain / sqrt(fan_in) unless given."""

    fan_in: int
    fan_out: int
    bias: bool = True
    gain: float = 1.0
    std: float | None = None
    kind: ClassVar[str] = "linear"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.fan_in, self.fan_out)} | ({"bias": (self.fan_out,)} if self.bias else {})

    def init(self, torch: Any) -> dict[str, Any]:
        std = self.std if self.std is not None else self.gain / math.sqrt(self.fan_in)
        weight = torch.randn(self.fan_in, self.fan_out) * std
        return {"weight": weight} | ({"bias": torch.zeros(self.fan_out)} if self.bias else {})

    def out_shape(self, shape: Shape) -> Shape:
        return Shape(shape.time, self.fan_out)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        if x.ndim == 2:
            y = x @ p["weight"]
        else:  # (batch, time, C) as one (batch * time, C) matrix: numpy would run one small product per example
            y = (x.reshape(-1, self.fan_in) @ p["weight"]).reshape(*x.shape[:-1], self.fan_out)
        return y + p["bias"] if self.bias else y


@dataclass
class BatchNorm1d(Layer):
    """Normalises each channel: with the batch's statistics while training (over dims (0,) or (0, 1)), with
    running ones at evaluation, then scales by gamma and shifts by beta.

    spread=var is part 5's layer: (x - mean) / sqrt(var + eps), unbiased var, running var. spread=std is
    part 3's: (x - mean) / (std + eps), unbiased std, a running std (with eps 0, the lecture's exact code).
    The running statistics move as running = (1 - momentum) * running + momentum * batch statistic.
    """

    channels: int
    eps: float = 1e-5
    momentum: float = 0.1
    spread: str = "var"
    kind: ClassVar[str] = "batchnorm"

    def __post_init__(self) -> None:
        if self.spread not in ("var", "std"):
            raise CharmlpError(f"batchnorm spread must be var (part 5) or std (part 3), got {self.spread!r}")
        if not 0 <= self.momentum <= 1 or self.eps < 0:
            raise CharmlpError(f"batchnorm needs 0 <= momentum <= 1 and eps >= 0, got {self.momentum}, {self.eps}")

    @property
    def buffers(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("running_mean", f"running_{self.spread}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {role: (self.channels,) for role in ("gamma", "beta", *self.buffers)}

    def init(self, torch: Any) -> dict[str, Any]:
        ones, zeros = torch.ones(self.channels), torch.zeros(self.channels)
        return {"gamma": ones, "beta": zeros, "running_mean": zeros.clone(), f"running_{self.spread}": ones.clone()}

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        if training:  # torch tensors only: sampling never trains
            dims = tuple(range(x.ndim - 1))
            mean = x.mean(dims)
            centred = x - mean
            count = x.numel() // x.shape[-1]
            if count < 2:
                raise CharmlpError("batch norm needs 2 or more values per channel in a batch: data.batch_size >= 2")
            # the unbiased variance written out: on the CPU twice as fast as x.var, equal up to rounding
            var = (centred * centred).sum(dims) / (count - 1)
            spread = var if self.spread == "var" else var.sqrt()
            with xp.no_grad():  # running + momentum * (batch - running) = (1 - momentum) * running + momentum * batch
                for role, batch in (("running_mean", mean), (f"running_{self.spread}", spread)):
                    p[role].lerp_(batch.to(p[role].dtype), self.momentum)  # bf16 under autocast, fp32 buffers
        else:
            mean, spread = p["running_mean"], p[f"running_{self.spread}"]
            centred = x - mean
        scale = p["gamma"] / (
            xp.sqrt(spread + self.eps) if self.spread == "var" else spread + self.eps if self.eps else spread
        )
        return centred * scale + p["beta"]


@dataclass
class Tanh(Layer):
    kind: ClassVar[str] = "tanh"

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.tanh(x)


@dataclass
class Dropout(Layer):
    """Inverted dropout while training (`xp.dropout`: training's array module, charmlp.model.torch_ops, has it);
    the identity at evaluation."""

    p: float
    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise CharmlpError(f"dropout p must be in [0, 1), got {self.p}")

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.dropout(x, self.p) if training and self.p else x


KINDS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Embedding, FlattenConsecutive, Linear, BatchNorm1d, Tanh, Dropout)
}


def bind(layers: Sequence[Layer], state: Mapping[str, Any]) -> list[tuple[Layer, dict[str, Any]]]:
    """Each layer with its parameters and buffers by role, looked up once by their state-dict names."""
    return [(layer, {role: state[key] for role, key in layer.keys.items()}) for layer in layers]


def forward(
    bound: Sequence[tuple[Layer, Mapping[str, Any]]],
    xp: Any,
    x: Any,
    training: bool = False,
    trace: list[tuple[Layer, Any]] | None = None,
) -> Any:
    """The Sequential: each bound layer in turn; `trace` (a list) collects each layer with its output."""
    for layer, params in bound:
        x = layer.forward(xp, params, x, training)
        if trace is not None:
            trace.append((layer, x))
    return x


def build(specs: Sequence[Mapping[str, Any]], vocab_size: int, block_size: int) -> list[Layer]:
    """Layers from the config's list, each sized by the one before it; names its state `layers.I.ROLE`.

    `embedding` needs `dim` (its rows are the vocabulary), `flatten` takes `n` (default: all time steps),
    `linear` takes `out` (default: the vocabulary), `bias`, `gain` or `std`; `batchnorm` takes `eps`,
    `momentum`, `spread`; `dropout` takes `p`. The last layer must give one vector of vocabulary logits.
    """
    if not specs:
        raise CharmlpError("model.layers is empty: list the layers, first an embedding")
    layers, shape = [], Shape(block_size, 0)
    for i, spec in enumerate(specs):
        where = f"model.layers[{i}]"
        if not isinstance(spec, Mapping) or spec.get("layer") not in KINDS:
            got = spec.get("layer") if isinstance(spec, Mapping) else spec
            raise CharmlpError(f"{where}: unknown layer {got!r}; known: {', '.join(KINDS)}")
        args = {k: v for k, v in spec.items() if k != "layer"}
        try:
            layer = _make(spec["layer"], args, shape, vocab_size, i)
        except TypeError as err:
            raise CharmlpError(f"{where} ({spec['layer']}): {err}") from None
        except CharmlpError as err:
            raise CharmlpError(f"{where}: {err}") from None
        sizes = [getattr(layer, "n", 1), *(d for dims in layer.shapes().values() for d in dims)]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in sizes):
            raise CharmlpError(f"{where} ({spec['layer']}): sizes must be positive integers, got {spec}")
        try:
            shape = layer.out_shape(shape)
        except CharmlpError as err:
            raise CharmlpError(f"{where}: {err}{_block_size_hint(specs, block_size)}") from None
        layer.keys = {role: f"layers.{i}.{role}" for role in layer.shapes()}
        layer.name = f"layers.{i}"
        layers.append(layer)
    if shape != Shape(None, vocab_size):
        hint = _block_size_hint(specs, block_size) if shape.time else ""
        raise CharmlpError(
            f"model.layers end in {shape.time or 1} step(s) of {shape.channels}: the last layer must give "
            f"{vocab_size} logits (one vector per example; end with a linear layer without `out`){hint}"
        )
    return layers


def _block_size_hint(specs: Sequence[Mapping[str, Any]], block_size: int) -> str:
    """For layers whose flattens join a fixed number of steps (a WaveNet's n=2 levels): the block size they fit."""
    need = math.prod(int(s["n"]) for s in specs if s.get("layer") == "flatten" and isinstance(s.get("n"), int))
    return f"; these layers join {need} time steps: set data.block_size={need} (it is {block_size})" if need > 1 else ""


def _make(kind: str, args: dict[str, Any], shape: Shape, vocab_size: int, index: int) -> Layer:
    if kind == "embedding":
        if index:
            raise CharmlpError("an embedding can only be the first layer")
        return Embedding(vocab_size, **args)
    if index == 0:
        raise CharmlpError("the first layer must be an embedding (the input is character ids)")
    if kind == "flatten":
        n = args.pop("n", None)
        return FlattenConsecutive(shape.time or 1 if n is None else n, **args)
    if kind == "linear":
        out = args.pop("out", None)
        return Linear(shape.channels, vocab_size if out is None else out, **args)
    if kind == "batchnorm":
        return BatchNorm1d(shape.channels, **args)
    return KINDS[kind](**args)


def parameter_count(layers: Sequence[Layer]) -> int:
    """Trained numbers (running statistics left out): 76,579 for part 5's WaveNet on 27 characters."""
    return sum(math.prod(s) for layer in layers for role, s in layer.shapes().items() if role not in layer.buffers)
