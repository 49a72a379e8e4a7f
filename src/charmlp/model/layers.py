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

Each layer also carries its backward pass beside its forward (makemore part 4): `backward(xp, p, x, y, dy, saved)`
turns d loss / d output into d loss / d input and d loss / d each parameter, written over numpy (training's
hand-written update, charmlp.training.hand_step; torch trains by autograd). `forward(..., tape=[])` records what
`backward` reads. tests/test_backward.py checks every layer against autograd and finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
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

    def bodies(self) -> list[list[Layer]]:
        """The layer lists inside it (a residual's body, an ensemble's members), which hold their own state; such a
        layer's `join(xp, x, outputs, training)` makes its output of its input and its bodies' outputs."""
        return []

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return x

    def forward_saving(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> tuple[Any, Any]:
        """The forward's output and what its backward needs besides the input and the output (None: nothing)."""
        return self.forward(xp, p, x, training), None

    # False: in numpy this layer is slower than torch + autograd at makemore's sizes (it works along the time axis
    # or on stacks of small matrices, where numpy has no fused kernel); a network with one trains by autograd
    fast_by_hand: ClassVar[bool] = True

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """(d loss / d x, {role: d loss / d parameter}) from dy = d loss / d y, y = forward(x) in training. A layer
        that does not write its own has none (`by_hand` says so): an update through it takes autograd."""
        raise NotImplementedError(f"{type(self).__name__} has no hand-written backward")


@dataclass
class Embedding(Layer):
    """A lookup table: ids (batch, time) -> (batch, time, dim). makemore's C; N(0, 1) * std (std 0: the bigram's
    table of zeros).

    window=n (on whole words): each position gets the embeddings of the n ids up to it side by side, '.' before the
    word's start, (batch, time, n * dim): at every position of a word the context window that the lecture's MLP
    reads in window mode, so an MLP after it predicts every position as it predicts each window.
    """

    num: int
    dim: int
    std: float = 1.0
    window: int = 0
    kind: ClassVar[str] = "embedding"

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 0:
            raise CharmlpError(f"embedding window must be a whole number of ids (0: none), got {self.window!r}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num, self.dim)}

    def init(self, torch: Any) -> dict[str, Any]:
        weight = torch.randn(self.num, self.dim)
        return {"weight": weight if self.std == 1 else weight * self.std}

    def out_shape(self, shape: Shape) -> Shape:
        return Shape(shape.time, self.dim * (self.window or 1))

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        if not self.window:
            return p["weight"][x]
        B, T = x.shape
        return p["weight"][xp.causal_windows(x, self.window)].reshape(B, T, self.window * self.dim)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """Each row of the table gets the sum of dy over the places it was looked up; ids have no gradient."""
        ids = xp.causal_windows(x, self.window) if self.window else x
        return None, {"weight": xp.scatter_rows(ids.reshape(-1), dy.reshape(-1, self.dim), self.num)}


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

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        return dy.reshape(x.shape), {}


@dataclass
class Linear(Layer):
    """x @ weight (+ bias) on the last dim. init=normal: weight ~ N(0, 1) * std, std = gain / sqrt(fan_in) unless
    given, bias 0; init=uniform: torch's nn.Linear default (makemore.py's), weight and bias ~ U(-b, b), b =
    1 / sqrt(fan_in)."""

    fan_in: int
    fan_out: int
    bias: bool = True
    gain: float = 1.0
    std: float | None = None
    init_as: str = "normal"
    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        if self.init_as not in ("normal", "uniform"):
            raise CharmlpError(f"linear init must be normal or uniform (torch's default), got {self.init_as!r}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.fan_in, self.fan_out)} | ({"bias": (self.fan_out,)} if self.bias else {})

    def init(self, torch: Any) -> dict[str, Any]:
        if self.init_as == "uniform":
            return uniform_init(torch, self.shapes(), self.fan_in)
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

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """y = x W + b: dx = dy W^T, dW = x^T dy, db = dy summed over the batch (and time)."""
        x2, d2 = (x, dy) if x.ndim == 2 else (x.reshape(-1, self.fan_in), dy.reshape(-1, self.fan_out))
        grads = {"weight": x2.T @ d2, "bias": d2.sum(0)} if self.bias else {"weight": x2.T @ d2}
        dx = d2 @ p["weight"].T
        return (dx if x.ndim == 2 else dx.reshape(x.shape)), grads


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
        return self.forward_saving(xp, p, x, training)[0]

    def forward_saving(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> tuple[Any, Any]:
        if training:  # sampling never trains
            dims = tuple(range(x.ndim - 1))
            mean = x.mean(dims)
            centred = x - mean
            count = math.prod(x.shape[:-1])
            if count < 2:
                raise CharmlpError("batch norm needs 2 or more values per channel in a batch: data.batch_size >= 2")
            # the unbiased variance written out: on the CPU twice as fast as x.var, equal up to rounding
            var = (centred * centred).sum(dims) / (count - 1)
            spread = var if self.spread == "var" else xp.sqrt(var)
            with xp.no_grad():  # running + momentum * (batch - running) = (1 - momentum) * running + momentum * batch
                for role, batch in (("running_mean", mean), (f"running_{self.spread}", spread)):
                    xp.lerp_(p[role], batch, self.momentum)
        else:
            mean, spread = p["running_mean"], p[f"running_{self.spread}"]
            centred = x - mean
        denominator = xp.sqrt(spread + self.eps) if self.spread == "var" else spread + self.eps if self.eps else spread
        return centred * (p["gamma"] / denominator) + p["beta"], (centred, denominator, spread)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """Through the batch's statistics too (makemore part 4's batch norm, the unbiased variance v = sum c^2 / (n - 1)
        of c = x - mean): with g = dy gamma and s = 1 / denominator, dx = s (g - mean g) + c sum(g c) ds/dv 2 / (n - 1);
        ds/dv = -s^2 / (2 sqrt(v + eps)) for spread=var, -s^2 / (2 std) for spread=std."""
        centred, denominator, spread = saved
        dims, count = tuple(range(x.ndim - 1)), math.prod(x.shape[:-1])
        s = 1 / denominator
        grads = {"gamma": (dy * centred).sum(dims) * s, "beta": dy.sum(dims)}
        g = dy * p["gamma"]
        ds_dv = -(s * s) / (2 * (denominator if self.spread == "var" else spread))
        dx = (g - g.mean(dims)) * s + centred * ((g * centred).sum(dims) * ds_dv * (2 / (count - 1)))
        return dx, grads


@dataclass
class Nonlinearity(Layer):
    """An elementwise nonlinearity: diagnostics read its output (activation and gradient statistics), and where its
    output has flat ends, `saturated` marks the values in them (|t| > level for tanh)."""

    def saturated(self, t: Any, level: float) -> Any | None:
        return None  # no flat ends (GELU): statistics only


@dataclass
class Tanh(Nonlinearity):
    kind: ClassVar[str] = "tanh"

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.tanh(x)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        return dy * (1 - y * y), {}  # tanh' = 1 - tanh^2

    def saturated(self, t: Any, level: float) -> Any:
        return t.abs() > level


@dataclass
class Sigmoid(Nonlinearity):
    kind: ClassVar[str] = "sigmoid"

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.sigmoid(x)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        return dy * (y * (1 - y)), {}  # sigmoid' = sigmoid (1 - sigmoid)

    def saturated(self, t: Any, level: float) -> Any:
        return (2 * t - 1).abs() > level  # the tanh view: sigmoid(x) = (1 + tanh(x / 2)) / 2


@dataclass
class Relu(Nonlinearity):
    kind: ClassVar[str] = "relu"

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return (x > 0) * x

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        return dy * (x > 0), {}

    def saturated(self, t: Any, level: float) -> Any:
        return t <= 0  # its flat end: no gradient passes


@dataclass
class Gelu(Nonlinearity):
    """makemore.py's (and GPT-2's) GELU, the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""

    kind: ClassVar[str] = "gelu"

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.gelu(x)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """With u = a (x + b x^3) and t = tanh(u): GELU' = (1 + t) / 2 + x (1 - t^2) a (1 + 3 b x^2) / 2."""
        a, b = math.sqrt(2 / math.pi), 0.044715
        t = xp.tanh(a * (x + b * x * x * x))
        return dy * (0.5 * (1 + t) + 0.5 * a * x * (1 - t * t) * (1 + 3 * b * x * x)), {}


@dataclass
class Dropout(Layer):
    """Inverted dropout while training: x times a mask of 0 and 1 / (1 - p) (`xp.dropout_mask`: training's array
    modules, charmlp.model.torch_ops and numpy_train_ops, have it); the identity at evaluation."""

    p: float
    kind: ClassVar[str] = "dropout"

    def __post_init__(self) -> None:
        if not 0 <= self.p < 1:
            raise CharmlpError(f"dropout p must be in [0, 1), got {self.p}")

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return self.forward_saving(xp, p, x, training)[0]

    def forward_saving(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> tuple[Any, Any]:
        if not (training and self.p):
            return x, None
        mask = xp.dropout_mask(x, self.p)
        return x * mask, mask

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        return (dy if saved is None else dy * saved), {}


@dataclass
class Position(Layer):
    """Adds a learned vector per position (makemore.py's wpe, N(0, 1)): (batch, T, C) + weight[:T]."""

    steps: int
    channels: int
    kind: ClassVar[str] = "position"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.steps, self.channels)}

    def init(self, torch: Any) -> dict[str, Any]:
        return {"weight": torch.randn(self.steps, self.channels)}

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return x + p["weight"][: x.shape[1]]

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        grad = xp.zeros_like(p["weight"])  # positions past the batch's longest word get none
        grad[: x.shape[1]] = dy.sum(0)
        return dy, {"weight": grad}


@dataclass
class LayerNorm(Layer):
    """Normalises each vector over its channels (biased variance, eps), then gamma * . + beta (Ba et al. 2016)."""

    channels: int
    eps: float = 1e-5
    kind: ClassVar[str] = "layernorm"
    fast_by_hand: ClassVar[bool] = False

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.channels,), "beta": (self.channels,)}

    def init(self, torch: Any) -> dict[str, Any]:
        return {"gamma": torch.ones(self.channels), "beta": torch.zeros(self.channels)}

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.layer_norm(x, p["gamma"], p["beta"], self.eps)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """With xhat = c s (c = x - mean, s = 1 / sqrt(biased var + eps)) and g = dy gamma, over the channels:
        dx = s (g - mean g - xhat mean(g xhat))."""
        centred = x - x.mean(-1, keepdims=True)
        s = 1 / xp.sqrt((centred * centred).mean(-1, keepdims=True) + self.eps)
        xhat, dims = centred * s, tuple(range(x.ndim - 1))
        g = dy * p["gamma"]
        dx = (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)) * s
        return dx, {"gamma": (dy * xhat).sum(dims), "beta": dy.sum(dims)}


@dataclass
class CausalAverage(Layer):
    """makemore.py's causal bag of words: position t becomes the mean of positions 0..t (no parameters)."""

    kind: ClassVar[str] = "causal_average"
    fast_by_hand: ClassVar[bool] = False

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return xp.causal_mean(x)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """Position s reaches every later mean t >= s, with weight 1 / (t + 1): a cumulative sum from the end."""
        steps = xp.arange(1, x.shape[1] + 1, dtype=dy.dtype)[:, None]
        return xp.flip(xp.flip(dy / steps, 1).cumsum(1), 1), {}


@dataclass
class Attention(Layer):
    """Causal multi-head self-attention (Vaswani et al. 2017) on queries, keys and values side by side: (batch, T,
    3C) -> (batch, T, C). Each of `heads` heads of C / heads channels: softmax(q k^T / sqrt(C / heads) + causal
    mask) v. The projections around it are linear layers (makemore.py's c_attn before, c_proj after)."""

    channels: int  # C, a third of the input's
    heads: int
    kind: ClassVar[str] = "attention"
    fast_by_hand: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.heads < 1 or self.channels % self.heads:
            raise CharmlpError(f"attention needs heads >= 1 dividing its {self.channels} channels, got {self.heads}")

    def out_shape(self, shape: Shape) -> Shape:
        if shape.time is None or shape.channels != 3 * self.channels:
            raise CharmlpError("attention needs time steps of queries, keys and values (a linear layer of out 3C)")
        return Shape(shape.time, self.channels)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        B, T, _ = x.shape
        C, hs = self.channels, self.channels // self.heads
        q, k, v = (x[..., i * C : (i + 1) * C].reshape(B, T, self.heads, hs).swapaxes(1, 2) for i in range(3))
        return xp.causal_attention(q, k, v).swapaxes(1, 2).reshape(B, T, C)

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """out = A v with A = softmax(q k^T / sqrt(hs) + mask): dv = A^T dout, dA = dout v^T, and through the softmax
        dscores = A (dA - sum(dA A)) (zero where masked), dq = dscores k / sqrt(hs), dk = dscores^T q / sqrt(hs)."""
        B, T, _ = x.shape
        C, hs = self.channels, self.channels // self.heads
        q, k, v = (x[..., i * C : (i + 1) * C].reshape(B, T, self.heads, hs).swapaxes(1, 2) for i in range(3))
        weights = xp.causal_attention_weights(q, k)
        dout = dy.reshape(B, T, self.heads, hs).swapaxes(1, 2)
        dweights = dout @ v.swapaxes(-1, -2)
        dscores = weights * (dweights - (dweights * weights).sum(-1, keepdims=True)) * (1 / math.sqrt(hs))
        grads = (dscores @ k, dscores.swapaxes(-1, -2) @ q, weights.swapaxes(-1, -2) @ dout)
        return xp.concatenate([g.swapaxes(1, 2).reshape(B, T, C) for g in grads], -1), {}


@dataclass
class Recurrent(Layer):
    """makemore.py's RNN (Mikolov 2010) or GRU (Cho et al. 2014) over the time steps: (batch, T, C) -> (batch, T, H).

    rnn: h_t = tanh([x_t, h_t-1] W + b). gru: z, r = sigmoid([x_t, h_t-1] W_zr + b_zr), hbar = tanh([x_t, r h_t-1]
    W_h + b_h), h_t = (1 - z) h_t-1 + z hbar. h_0 is the learned `start`. Each gate is one (C + H, H) linear map as
    makemore.py's (torch's default init); they are stored side by side, z, r, hbar, in one weight. The x_t half of
    every gate is computed for all steps at once: only the h half is a product per step.
    """

    channels: int
    hidden: int
    cell: str = "rnn"
    kind: ClassVar[str] = "recurrent"
    fast_by_hand: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.cell not in ("rnn", "gru"):
            raise CharmlpError(f"recurrent cell must be rnn or gru, got {self.cell!r}")

    @property
    def gates(self) -> int:
        return 3 if self.cell == "gru" else 1

    def shapes(self) -> dict[str, tuple[int, ...]]:
        width = self.gates * self.hidden
        return {"start": (self.hidden,), "weight": (self.channels + self.hidden, width), "bias": (width,)}

    def init(self, torch: Any) -> dict[str, Any]:
        shapes = self.shapes()
        values = uniform_init(torch, {"weight": shapes["weight"], "bias": shapes["bias"]}, self.channels + self.hidden)
        return {"start": torch.zeros(self.hidden), **values}

    def out_shape(self, shape: Shape) -> Shape:
        if shape.time is None:
            raise CharmlpError("a recurrent layer needs time steps (it comes before any flatten)")
        return Shape(shape.time, self.hidden)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return self.forward_saving(xp, p, x, training)[0]

    def forward_saving(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> tuple[Any, Any]:
        B, T, C = x.shape
        H, w = self.hidden, p["weight"]
        inputs = (x.reshape(B * T, C) @ w[:C] + p["bias"]).reshape(B, T, -1)  # every step's x_t half at once
        w_h, h = w[C:], p["start"]
        w_zr, w_hbar = w_h[:, : 2 * H], w_h[:, 2 * H :]
        states, gates = [], []  # the gates for the backward: z and r side by side, and hbar
        for t in range(T):
            a = inputs[:, t]
            if self.cell == "rnn":
                h = xp.tanh(a + h @ w_h)
            else:
                zr = xp.sigmoid(a[:, : 2 * H] + h @ w_zr)
                z, r = zr[:, :H], zr[:, H:]
                hbar = xp.tanh(a[:, 2 * H :] + (r * h) @ w_hbar)
                h = h + z * (hbar - h)
                gates.append((zr, hbar))
            states.append(h)
        return xp.stack(states, 1), gates

    def backward(self, xp: Any, p: Mapping[str, Any], x: Any, y: Any, dy: Any, saved: Any) -> tuple[Any, dict]:
        """Back through time: at each step, from the last, dh (dy_t plus what step t+1 sent back) goes through the
        cell into its pre-activations; their x_t halves make dx and the x rows of the weight in one product at the
        end, the h halves send dh to step t-1 and make the h rows. The GRU's h_t = h + z (hbar - h)."""
        B, T, C = x.shape
        H, w = self.hidden, p["weight"]
        w_h = w[C:]
        w_zr, w_hbar = w_h[:, : 2 * H], w_h[:, 2 * H :]
        start = xp.broadcast_to(p["start"], (B, H))
        dpre = xp.zeros((B, T, self.gates * H), dtype=dy.dtype)  # d loss / d each step's pre-activations
        dw_h, dh = xp.zeros_like(w_h), xp.zeros_like(start)
        for t in range(T - 1, -1, -1):
            dh = dh + dy[:, t]
            h_prev = y[:, t - 1] if t else start
            if self.cell == "rnn":
                h = y[:, t]
                da = dh * (1 - h * h)
                dpre[:, t] = da
                dw_h += h_prev.T @ da
                dh = da @ w_h.T
            else:
                zr, hbar = saved[t]
                z, r = zr[:, :H], zr[:, H:]
                dhbar = dh * z * (1 - hbar * hbar)  # through the tanh
                drh = dhbar @ w_hbar.T  # d loss / d (r h)
                dzr = xp.concatenate([dh * (hbar - h_prev), drh * h_prev], 1) * (zr * (1 - zr))
                dpre[:, t, : 2 * H], dpre[:, t, 2 * H :] = dzr, dhbar
                dw_h[:, : 2 * H] += h_prev.T @ dzr
                dw_h[:, 2 * H :] += (r * h_prev).T @ dhbar
                dh = dh * (1 - z) + drh * r + dzr @ w_zr.T
        x2, d2 = x.reshape(B * T, C), dpre.reshape(B * T, -1)
        grads = {"start": dh.sum(0), "weight": xp.concatenate([x2.T @ d2, dw_h], 0), "bias": d2.sum(0)}
        return (d2 @ w[:C].T).reshape(B, T, C), grads

    def saturated(self, t: Any, level: float) -> Any:
        return t.abs() > level  # h is tanh's (the GRU's a mix of tanh values): bounded by 1


@dataclass
class Residual(Layer):
    """x + body(x) (He et al. 2016): the body's layers, which keep x's shape, as a branch beside the identity."""

    body: list[Layer] = field(default_factory=list)
    kind: ClassVar[str] = "residual"

    def bodies(self) -> list[list[Layer]]:
        return [self.body]

    def join(self, xp: Any, x: Any, outputs: Sequence[Any], training: bool) -> Any:
        return x + outputs[0]

    def join_backward(self, xp: Any, dy: Any) -> tuple[Any, list[Any]]:
        """(d loss / d x by the join itself, d loss / d each body's output): the identity's and the body's, dy."""
        return dy, [dy]

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return forward([(self, p)], xp, x, training)


@dataclass
class Ensemble(Layer):
    """Members side by side on the same ids, each a list of layers that ends in logits (Dietterich 2000): while
    training each member is trained on its own loss (their logits come stacked, members first, and the loss is the
    members' mean); at evaluation the ensemble predicts the average of their probabilities, as log-probabilities
    (log mean softmax), so every loss, sampler and score reads it as one model's logits."""

    members: list[list[Layer]] = field(default_factory=list)
    out: Shape = Shape(None, 0)
    kind: ClassVar[str] = "ensemble"

    def bodies(self) -> list[list[Layer]]:
        return self.members

    def out_shape(self, shape: Shape) -> Shape:
        return self.out

    def combine(self, xp: Any, outputs: Sequence[Any], training: bool) -> Any:
        return xp.stack(list(outputs), 0) if training else xp.mixture(list(outputs))

    def join(self, xp: Any, x: Any, outputs: Sequence[Any], training: bool) -> Any:
        return self.combine(xp, outputs, training)

    def join_backward(self, xp: Any, dy: Any) -> tuple[Any, list[Any]]:
        """Training's stack: each member gets its own slice; the ids get nothing."""
        return None, list(dy)

    def forward(self, xp: Any, p: Mapping[str, Any], x: Any, training: bool = False) -> Any:
        return forward([(self, p)], xp, x, training)


KINDS: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (
        Embedding,
        FlattenConsecutive,
        Linear,
        BatchNorm1d,
        Tanh,
        Sigmoid,
        Relu,
        Gelu,
        Dropout,
        Position,
        LayerNorm,
        CausalAverage,
        Attention,
        Recurrent,
        Residual,
        Ensemble,
    )
}
MACROS = ("repeat",)  # {layer: repeat, times: N or null, body: [...]}: the body's layers N times, in place


def uniform_init(torch: Any, shapes: Mapping[str, tuple[int, ...]], fan_in: int) -> dict[str, Any]:
    """torch's default init of nn.Linear (makemore.py's): every value ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1 / math.sqrt(fan_in)
    return {role: torch.empty(shape).uniform_(-bound, bound) for role, shape in shapes.items()}


def walk(layers: Sequence[Layer]) -> Iterator[Layer]:
    """Every layer, the layers of its bodies after it (the layers that hold parameters, and what diagnostics read)."""
    for layer in layers:
        yield layer
        for body in layer.bodies():
            yield from walk(body)


def bind(layers: Sequence[Layer], state: Mapping[str, Any]) -> list[tuple[Layer, dict[str, Any]]]:
    """Each layer with its parameters and buffers by role, looked up once by their state-dict names (a residual or an
    ensemble: its bound bodies under "bodies")."""
    return [
        (
            layer,
            {"bodies": [bind(body, state) for body in layer.bodies()]}
            if layer.bodies()
            else {r: state[k] for r, k in layer.keys.items()},
        )
        for layer in layers
    ]


def forward(
    bound: Sequence[tuple[Layer, Mapping[str, Any]]],
    xp: Any,
    x: Any,
    training: bool = False,
    trace: list[tuple[Layer, Any]] | None = None,
    tape: list[tuple[Any, ...]] | None = None,
) -> Any:
    """The Sequential: each bound layer in turn; `trace` (a list) collects each layer with its output (the layers of
    a residual's body and an ensemble's members too, before they are joined); `tape` (a list) what `backward` reads:
    each layer with its parameters, input, output and saved values (a layer with bodies: their tapes)."""
    for layer, params in bound:
        if layer.bodies():  # a residual, an ensemble: its bodies run (and are traced) here, its `join` joins them
            tapes = [[] if tape is not None else None for _ in params["bodies"]]
            outputs = [forward(body, xp, x, training, trace, t) for body, t in zip(params["bodies"], tapes)]
            y, saved = layer.join(xp, x, outputs, training), tapes
        elif tape is not None:
            y, saved = layer.forward_saving(xp, params, x, training)
        else:
            y = layer.forward(xp, params, x, training)
        if tape is not None:
            tape.append((layer, params, x, y, saved))
        if trace is not None:
            trace.append((layer, y))
        x = y
    return x


def backward(tape: Sequence[tuple[Any, ...]], xp: Any, dy: Any, grads: dict[str, Any]) -> Any:
    """Backpropagation through a forward's `tape`, from d loss / d its output: each layer's backward, the last first,
    each parameter's gradient into `grads` under its state name; returns d loss / d the input (None for ids)."""
    for layer, params, x, y, saved in reversed(tape):
        if layer.bodies():
            dx, douts = layer.join_backward(xp, dy)
            for body_tape, dout in zip(saved, douts):
                dbody = backward(body_tape, xp, dout, grads)
                if dbody is not None:
                    dx = dbody if dx is None else dx + dbody
        else:
            dx, layer_grads = layer.backward(xp, params, x, y, dy, saved)
            for role, grad in layer_grads.items():
                grads[layer.keys[role]] = grad
        dy = dx
    return dy


def by_hand(layers: Sequence[Layer]) -> bool:
    """Whether every layer (in bodies too) has its backward written here: its own `backward`, or for a layer with
    bodies its `join_backward` (the bodies' layers are walked too)."""
    return all(
        hasattr(layer, "join_backward") if layer.bodies() else type(layer).backward is not Layer.backward
        for layer in walk(layers)
    )


def fast_by_hand(layers: Sequence[Layer]) -> bool:
    """Whether every layer (in bodies too) is faster through its numpy forward and backward than through autograd."""
    return all(layer.fast_by_hand for layer in walk(layers))


def output_shape(layers: Sequence[Layer], block_size: int) -> Shape:
    shape = Shape(block_size, 0)
    for layer in layers:
        shape = layer.out_shape(shape)
    return shape


def predicts_every_step(layers: Sequence[Layer], block_size: int) -> bool:
    """True for the sequence families (logits at every position of a word), False for one prediction per window."""
    return output_shape(layers, block_size).time is not None


def build(specs: Sequence[Mapping[str, Any]], vocab_size: int, block_size: int) -> list[Layer]:
    """Layers from the config's list, each sized by the one before it; names its state `layers.I.ROLE` (a residual's
    body layers `layers.I.J.ROLE`).

    `embedding` takes `dim` (default: the vocabulary, the bigram's table) and `std`; `flatten` takes `n` (default:
    all time steps); `linear` takes `out` (default: the vocabulary), `bias`, `gain` or `std`, `init` (normal or
    uniform); `batchnorm` takes `eps`, `momentum`, `spread`; `layernorm` `eps`; `dropout` `p`; `attention` `heads`;
    `recurrent` `hidden` and `cell` (rnn, gru); `residual` a `body` list; `ensemble` (the whole list) `members`, each a
    list from an embedding to the logits; `embedding` also `window` (whole words: each position's last n ids);
    `repeat` (in place) `times` (null: until
    one time step is left, a WaveNet's log2(block_size) levels) and a `body` list. The last layer must give
    vocabulary logits: one vector per example (a window), or one per time step (a sequence family).
    """
    if not specs:
        raise CharmlpError("model.layers is empty: list the layers, first an embedding")
    layers, shape = _build_list(specs, Shape(block_size, 0), vocab_size, "model.layers", specs, block_size, first=True)
    if isinstance(layers[0], Ensemble) and len(layers) > 1:
        raise CharmlpError(
            "model.layers[1]: an ensemble must be the only layer of the list (its members end in the logits)"
        )
    for i, layer in enumerate(layers):
        _rename(layer, f"layers.{i}")
    if shape not in (Shape(None, vocab_size), Shape(block_size, vocab_size)):
        hint = _block_size_hint(specs, block_size) if shape.time else ""
        raise CharmlpError(
            f"model.layers end in {shape.time or 1} step(s) of {shape.channels}: the last layer must give "
            f"{vocab_size} logits, one vector per example or one per time step (end with a linear layer without "
            f"`out`){hint}"
        )
    return layers


def _build_list(
    specs: Sequence[Any],
    shape: Shape,
    vocab_size: int,
    where: str,
    top: Sequence[Mapping[str, Any]],
    block_size: int,
    first: bool,
) -> tuple[list[Layer], Shape]:
    """The layers of one list (the config's, or a body's) from the shape that flows into it, not yet named."""
    layers: list[Layer] = []
    for i, spec in enumerate(specs):
        here = f"{where}[{i}]"
        if isinstance(spec, Mapping) and spec.get("layer") in MACROS:
            times, body = spec.get("times"), spec.get("body")
            if not isinstance(body, Sequence) or isinstance(body, str) or not body:
                raise CharmlpError(f"{here} (repeat): give its layers as a non-empty `body` list")
            if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
                raise CharmlpError(f"{here} (repeat): times must be a positive integer or null, got {times!r}")
            count = 0
            while (count < times) if times is not None else shape.time is not None:
                before = shape
                more, shape = _build_list(body, shape, vocab_size, f"{here}.body", top, block_size, first=False)
                if times is None and shape.time == before.time:
                    raise CharmlpError(f"{here} (repeat): times null needs a body that joins time steps (a flatten)")
                layers += more  # in place: the list numbers as if written out
                count += 1
            continue
        if not isinstance(spec, Mapping) or spec.get("layer") not in KINDS:
            got = spec.get("layer") if isinstance(spec, Mapping) else spec
            raise CharmlpError(f"{here}: unknown layer {got!r}; known: {', '.join([*KINDS, *MACROS])}")
        args = {k: v for k, v in spec.items() if k != "layer"}
        try:
            if spec["layer"] == "residual":
                body_specs = args.pop("body", None)
                if args:
                    raise TypeError(f"unexpected keys {sorted(args)}")
                if not isinstance(body_specs, Sequence) or isinstance(body_specs, str) or not body_specs:
                    raise CharmlpError("give the residual's layers as a non-empty `body` list")
                body, out = _build_list(body_specs, shape, vocab_size, f"{here}.body", top, block_size, first=False)
                if out != shape:
                    raise CharmlpError(f"its body turns {_show(shape)} into {_show(out)}: it must keep the shape")
                layer: Layer = Residual(body)
            elif spec["layer"] == "ensemble":
                layer = _ensemble(args, shape, vocab_size, here, top, block_size, first=first and not layers)
            else:
                layer = _make(spec["layer"], args, shape, vocab_size, block_size, first=first and not layers)
        except TypeError as err:
            raise CharmlpError(f"{here} ({spec['layer']}): {err}") from None
        except CharmlpError as err:
            raise CharmlpError(str(err) if str(err).startswith(where) else f"{here}: {err}") from None
        sizes = [getattr(layer, name, 1) for name in ("n", "heads", "hidden", "dim")]
        sizes += [d for dims in layer.shapes().values() for d in dims]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in sizes):
            raise CharmlpError(f"{here} ({spec['layer']}): sizes must be positive integers, got {dict(spec)}")
        try:
            shape = layer.out_shape(shape)
        except CharmlpError as err:
            raise CharmlpError(f"{here}: {err}{_block_size_hint(top, block_size)}") from None
        layers.append(layer)
    return layers, shape


def _ensemble(
    args: dict[str, Any],
    shape: Shape,
    vocab_size: int,
    here: str,
    top: Sequence[Mapping[str, Any]],
    block_size: int,
    first: bool,
) -> Ensemble:
    """An ensemble from its `members` lists, each built from the ids as a whole network is."""
    specs = args.pop("members", None)
    if args:
        raise TypeError(f"unexpected keys {sorted(args)}")
    if not first or here.count("[") > 1:  # not inside a member either: its members' stack would be stacked again
        raise CharmlpError("an ensemble can only be the first layer of model.layers (each member reads the ids)")
    if (
        not isinstance(specs, Sequence)
        or isinstance(specs, str)
        or len(specs) < 2
        or any(not isinstance(m, Sequence) or isinstance(m, str) or not m for m in specs)
    ):
        raise CharmlpError("give the ensemble's `members` as two or more non-empty lists of layers")
    members, outs = [], []
    for m, member in enumerate(specs):
        layers, out = _build_list(member, shape, vocab_size, f"{here}.members[{m}]", top, block_size, first=True)
        members.append(layers)
        outs.append(out)
    if any(out != Shape(outs[0].time, vocab_size) for out in outs):
        raise CharmlpError(
            f"its members end in {', '.join(_show(out) for out in outs)}: each must end in {vocab_size} logits, "
            "all of them at the same time steps"
        )
    return Ensemble(members, outs[0])


def _rename(layer: Layer, name: str) -> None:
    """Names a layer and its state (`name.ROLE`), a residual's body below it (`name.J`), an ensemble's members
    (`name.M.J`)."""
    layer.name = name
    layer.keys = {role: f"{name}.{role}" for role in layer.shapes()}
    if isinstance(layer, Residual):
        for j, inner in enumerate(layer.body):
            _rename(inner, f"{name}.{j}")
    for m, member in enumerate(layer.members if isinstance(layer, Ensemble) else []):
        for j, inner in enumerate(member):
            _rename(inner, f"{name}.{m}.{j}")


def _show(shape: Shape) -> str:
    return f"{shape.time} steps of {shape.channels}" if shape.time else f"one vector of {shape.channels}"


def _joined(specs: Sequence[Any]) -> int | None:
    """How many time steps a list's fixed flattens join (a repeat of null times: None, a power of its body's)."""
    need = 1
    for s in specs:
        if not isinstance(s, Mapping):
            continue
        if s.get("layer") == "flatten" and isinstance(s.get("n"), int):
            need *= s["n"]
        elif s.get("layer") in MACROS and isinstance(s.get("body"), Sequence):
            inner = _joined(s["body"])
            if s.get("times") is None:
                return None if inner and inner > 1 else need
            if inner is None or not isinstance(s.get("times"), int):
                return None
            need *= inner ** s["times"]
    return need


def _block_size_hint(specs: Sequence[Mapping[str, Any]], block_size: int) -> str:
    """For layers whose flattens join a fixed number of steps (a WaveNet's n=2 levels): the block size they fit."""
    need = _joined(specs)
    if need is None:
        return (
            f"; a repeat of null times joins pairs until one step is left: data.block_size must be a power of two "
            f"(4, 8, 16, ...; it is {block_size}), or set the number of levels (model.levels for model=wavenet)"
        )
    if need > 1:
        return f"; these layers join {need} time steps: set data.block_size={need} (it is {block_size})"
    return ""


def _make(kind: str, args: dict[str, Any], shape: Shape, vocab_size: int, block_size: int, first: bool) -> Layer:
    if kind == "embedding":
        if not first:
            raise CharmlpError("an embedding can only be the first layer")
        window = args.get("window", 0)
        if isinstance(window, int) and window > block_size:
            raise CharmlpError(f"embedding window={window} is longer than data.block_size={block_size}")
        return Embedding(vocab_size, args.pop("dim", vocab_size), **args)
    if first:
        raise CharmlpError("the first layer must be an embedding (the input is character ids)")
    if kind == "flatten":
        n = args.pop("n", None)
        return FlattenConsecutive(shape.time or 1 if n is None else n, **args)
    if kind == "linear":
        out = args.pop("out", None)
        init = args.pop("init", "normal")
        return Linear(shape.channels, vocab_size if out is None else out, init_as=init, **args)
    if kind in ("batchnorm", "layernorm"):
        return KINDS[kind](shape.channels, **args)
    if kind == "position":
        if shape.time is None:
            raise CharmlpError("a position embedding needs time steps (it comes before any flatten)")
        return Position(block_size, shape.channels, **args)
    if kind == "attention":
        if shape.channels % 3:
            raise CharmlpError(
                f"attention needs queries, keys and values side by side (3C channels), got {shape.channels}"
            )
        return Attention(shape.channels // 3, **args)
    if kind == "recurrent":
        return Recurrent(shape.channels, **args)
    return KINDS[kind](**args)


def parameter_count(layers: Sequence[Layer]) -> int:
    """Trained numbers (running statistics left out): 76,579 for part 5's WaveNet on 27 characters."""
    return sum(
        math.prod(s) for layer in walk(layers) for role, s in layer.shapes().items() if role not in layer.buffers
    )
