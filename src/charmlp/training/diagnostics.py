"""The network's health as makemore part 3 draws it, measured while training every `diagnostics.every` updates.

A reading is taken on the minibatch of one real update, in three steps around it:
1. before it, a side pass: the same forward in training mode (the same dropout masks: torch's generator is
   restored afterwards, so the real update draws them again; batch norm's running statistics put back) and a
   backward by `torch.autograd.grad`, which leaves every `.grad` alone. It gives the activations after each
   nonlinearity (tanh, sigmoid, ReLU, GELU; a recurrent layer's states), the loss's gradient with respect to
   them, and each parameter's gradient. Saturation is read where the output has flat ends: tanh and the
   recurrent states |t| > level, sigmoid |2t - 1| > level, ReLU t <= 0; GELU has statistics only;
2. the real update, untouched: a run with diagnostics ends bit-identical to one without;
3. after it, each weight matrix against its copy from before: the update the optimizer really applied.

Layers and parameters go by the model's own names: the MLP's h1 (after W1), W1, C; a family's layers.4.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from charmlp.errors import CharmlpError
from charmlp.model import layers as L
from charmlp.training.loss import cross_entropy

# what a reading watches: every nonlinearity's output (tanh, sigmoid, ReLU, GELU) and each recurrent layer's states
WATCHED = (L.Nonlinearity, L.Recurrent)


@dataclass
class Reading:
    """One diagnostic point: scalars by TensorBoard tag, histograms' raw values, saturation maps (0/255)."""

    step: int
    scalars: dict[str, float] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # diag/activations/h1, diag/act_grads/h1, ...
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # diag/saturation_map/h1: examples x units, uint8


@dataclass
class Diagnostics:
    """`every` updates between readings (0: off); |t| > `saturated` counts as saturated, |t| > `dead` is white in
    the saturation map, and a unit white for every example of the minibatch is dead."""

    every: int = 1000
    saturated: float = 0.97
    dead: float = 0.99
    map_examples: int = 64
    clip_val: float | None = None
    clip_algorithm: str = "norm"
    last: Reading | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 0:
            raise CharmlpError(f"diagnostics.every must be a whole number of updates >= 0 (0: off), got {self.every}")
        for name in ("saturated", "dead"):
            if not 0 < getattr(self, name) < 1:
                raise CharmlpError(
                    f"diagnostics.{name} must be between 0 and 1 (a tanh level), got {getattr(self, name)}"
                )
        if self.map_examples < 1:
            raise CharmlpError(f"diagnostics.map_examples must be at least 1, got {self.map_examples}")

    def due(self, first: int, todo: int) -> int | None:
        """Which of the updates first+1 .. first+todo (as an index into them) is read, if any."""
        if not self.every:
            return None
        index = -(first + 1) % self.every  # update first+1+index is the next multiple of every
        return index if index < todo else None

    @contextlib.contextmanager
    def around(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, context: Any) -> Iterator[None]:
        """Wraps the real update `step` (its number once done); leaves its reading in `self.last`."""
        reading = Reading(step)
        weights = {name: p for name, p in net.named_parameters() if p.ndim == 2}
        before = {name: p.detach().clone() for name, p in weights.items()}
        self._side_pass(net, x, y, context, reading, weights)
        yield
        for name, p in weights.items():
            update, data = (p.detach() - before[name]).float().std(), p.detach().float().std()
            if update > 0 and data > 0:  # a zero update (lr 0 at the end of a one-cycle schedule) has no log
                reading.scalars[f"diag/update_data/{name}"] = math.log10(float(update / data))
        reading.scalars["diag/guide/update_data"] = -3.0  # the lecture's rule of thumb, a line on the chart
        self.last = reading

    def _side_pass(
        self,
        net: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        context: Any,
        reading: Reading,
        weights: Mapping[str, torch.nn.Parameter],
    ) -> None:
        buffers = [b.clone() for b in net.buffers()]
        params = dict(net.named_parameters())
        cuda = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.enable_grad(), context:
            trace: list[tuple[L.Layer, torch.Tensor]] = []
            loss = cross_entropy(net(x, trace=trace).float(), y)
            acts = [(layer, out) for layer, out in trace if isinstance(layer, WATCHED)]
            grads = torch.autograd.grad(loss, [a for _, a in acts] + list(params.values()), allow_unused=True)
        with torch.no_grad():
            for b, saved in zip(net.buffers(), buffers):
                b.copy_(saved)
        act_grads, param_grads = grads[: len(acts)], dict(zip(params, grads[len(acts) :]))
        s, values = reading.scalars, reading.values
        for (layer, t), g in zip(acts, act_grads):
            name, t = layer.name, t.detach().float()
            g = torch.zeros_like(t) if g is None else g.float()  # a GRU state the loss never reads: no gradient
            s[f"diag/act_mean/{name}"], s[f"diag/act_std/{name}"] = float(t.mean()), float(t.std())
            s[f"diag/act_grad_std/{name}"] = float(g.std())
            values[f"diag/activations/{name}"] = t.cpu().numpy().ravel()
            values[f"diag/act_grads/{name}"] = g.cpu().numpy().ravel()
            if layer.saturated(t, self.saturated) is None:  # GELU has no flat end: statistics only
                continue
            s[f"diag/saturation/{name}"] = float(layer.saturated(t, self.saturated).float().mean())
            white = layer.saturated(t, self.dead).reshape(-1, t.shape[-1])  # (examples [x time], units)
            s[f"diag/dead_units/{name}"] = float(white.all(0).sum())
            reading.maps[f"diag/saturation_map/{name}"] = (
                white[: self.map_examples].cpu().numpy().astype(np.uint8) * 255
            )
        present = [g.float() for g in param_grads.values() if g is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present])))
        s["diag/grad_norm"] = norm
        if self.clip_val is not None:  # would this update's gradient be clipped?
            biggest = norm if self.clip_algorithm == "norm" else max(float(g.abs().max()) for g in present)
            s["diag/clipped"] = float(biggest > self.clip_val)
        for name, p in weights.items():
            g = param_grads[name]
            if g is None:
                continue
            g, data = g.float(), p.detach().float().std()
            s[f"diag/grad_data/{name}"] = float(g.std() / data) if data > 0 else math.inf
            values[f"diag/weight_grads/{name}"] = g.cpu().numpy().ravel()


def histogram(values: np.ndarray, bins: int = 64) -> dict[str, Any] | None:
    """TensorBoard's histogram of `values` in `bins` equal buckets (SummaryWriter.add_histogram_raw's arguments):
    add_histogram's own ~1,500 exponential buckets cost 3 ms a histogram, most of a reading on the lecture's MLP.
    Non-finite values are left out (a diverging run still ends with its NaN message); None if nothing is left."""
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    counts, edges = np.histogram(values, bins=bins)
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "num": int(values.size),
        "sum": float(values.sum()),
        "sum_squares": float(np.dot(values, values)),
        "bucket_limits": edges[1:].tolist(),
        "bucket_counts": counts.tolist(),
    }


def layout(saturated: float) -> dict[str, dict[str, list]]:
    """TensorBoard's CUSTOM SCALARS tab: each quantity's layers on one chart, the lecture's pictures."""
    multiline = lambda *tags: ["Multiline", list(tags)]  # noqa: E731
    return {
        "diagnostics (makemore part 3)": {
            f"tanh saturation: fraction |t| > {saturated} (healthy: below ~0.05)": multiline(r"diag/saturation/.*"),
            "activation std after each nonlinearity": multiline(r"diag/act_std/.*"),
            "gradient std at each nonlinearity's output": multiline(r"diag/act_grad_std/.*"),
            "grad:data, std(grad) / std(weight)": multiline(r"diag/grad_data/.*"),
            "update:data, log10 std(update) / std(weight) (healthy: near -3, the guide)": multiline(
                r"diag/update_data/.*", r"diag/guide/update_data"
            ),
            "dead units (saturated for every example)": multiline(r"diag/dead_units/.*"),
            "gradient norm (and clipping, when on)": multiline(r"diag/grad_norm", r"diag/clipped"),
        }
    }


def write_reading(writer: Any, reading: Reading) -> None:
    """A reading's histograms and saturation maps into one TensorBoard writer (its scalars go with the others)."""
    for tag, values in reading.values.items():
        if (buckets := histogram(values)) is not None:
            writer.add_histogram_raw(tag, **buckets, global_step=reading.step)
    for tag, image in reading.maps.items():
        writer.add_image(tag, image, global_step=reading.step, dataformats="HW")
