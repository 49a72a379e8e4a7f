"""One training update in numpy on the model's own memory: the layers' forward, their hand-written backward
(charmlp.model.layers, makemore part 4) and the torch optimizer's step, for plain SGD (with weight decay) and AdamW.

The parameters, buffers and the optimizer's state stay torch tensors; numpy views of them share their memory, so
checkpoints, Lightning, evaluation and resume see every update as if torch had made it. A numpy call costs about a
microsecond where a torch op costs several, and on models this small that overhead is most of an update.
The numbers are those of autograd + torch.optim up to float32 rounding (another summation order):
tests/test_backward.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from charmlp.model import layers as L
from charmlp.model import numpy_train_ops
from charmlp.training.loss import cross_entropy_grad


def unsupported(net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why `HandStep` cannot run this network and optimizer (None: it can)."""
    if not L.by_hand(net.stack):
        return "a layer has no hand-written backward"
    if not L.fast_by_hand(net.stack):
        return "a layer is faster by autograd (attention, recurrent, causal average, layer norm: fast_by_hand)"
    if getattr(net, "fold_embedding", False):
        return "model.fold_embedding's table lookups have no hand-written backward"
    if any(
        t.device.type != "cpu" or t.dtype != torch.float32 for t in net.state_dict().values() if t.is_floating_point()
    ):
        return "numpy views need float32 tensors on the CPU"
    for group in optimizer.param_groups:
        if type(optimizer) is torch.optim.SGD:
            if group["momentum"] or group["nesterov"] or group["maximize"]:
                return "SGD with momentum, nesterov or maximize"
        elif type(optimizer) is torch.optim.AdamW:
            if group["amsgrad"] or group["maximize"] or group.get("capturable") or group.get("differentiable"):
                return "AdamW with amsgrad, maximize, capturable or differentiable"
        else:
            return f"{type(optimizer).__name__} (only SGD and AdamW are written by hand)"
    return None


class HandStep:
    """update(x, y) -> the loss before it: forward, backward and the optimizer's step of `optimizer` on `net`,
    whose `stack` of layers all have a backward (check with `unsupported` first)."""

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.net, self.optimizer = net, optimizer
        self.names = {id(p): name for name, p in net.named_parameters()}
        self._state: Any = None  # the optimizer's state dict these views were made from
        self.groups: list[tuple[dict, list[tuple[str, np.ndarray, tuple[np.ndarray, ...]]]]] = []
        self.prescaled = type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1
        self.step: Callable[[dict[str, np.ndarray], float], None] = (
            self._sgd if type(optimizer) is torch.optim.SGD else self._adamw
        )

    def _views(self) -> None:
        """Numpy views of each group's parameters and their AdamW state (made as torch makes it on a first step).
        Redone whenever the optimizer's state is a new dict: a resume's load_state_dict replaces it and the groups."""
        adamw = type(self.optimizer) is torch.optim.AdamW
        arrays = {name: t.detach().numpy() for name, t in self.net.state_dict(keep_vars=True).items()}
        self.bound = L.bind(self.net.stack, arrays)
        self.groups = []
        for group in self.optimizer.param_groups:
            params = []
            for p in group["params"]:
                state = self.optimizer.state[p]
                if adamw and not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                moments = tuple(state[k].numpy() for k in ("step", "exp_avg", "exp_avg_sq")) if adamw else ()
                params.append((self.names[id(p)], arrays[self.names[id(p)]], moments))
            self.groups.append((group, params))
        self._state = self.optimizer.state

    def __call__(self, x: np.ndarray, y: np.ndarray) -> float:
        """One update on numpy ids and targets (`inputs` makes them of a Lightning step's minibatches)."""
        if self.optimizer.state is not self._state:
            self._views()
        tape: list = []
        logits = L.forward(self.bound, numpy_train_ops, x, self.net.training, tape=tape)
        # plain SGD of one group: the gradients come out times -lr, so each step is one addition
        scale = -self.groups[0][0]["lr"] if self.prescaled else 1.0
        loss, dlogits = cross_entropy_grad(logits, y, scale)
        grads: dict[str, np.ndarray] = {}
        L.backward(tape, numpy_train_ops, dlogits, grads)
        self.step(grads, scale)
        return loss

    @staticmethod
    def inputs(xs: Any, ys: Any) -> tuple[Any, Any]:
        """A Lightning step's minibatches (a tensor per update, or one tensor of them) as numpy views."""
        if isinstance(xs, torch.Tensor):
            return xs.numpy(), ys.numpy()
        return [x.numpy() for x in xs], [y.numpy() for y in ys]

    def _sgd(self, grads: dict[str, np.ndarray], scale: float) -> None:
        """torch.optim.SGD without momentum: p -= lr (g + weight_decay p), as p (1 - lr weight_decay) + (-lr g)
        when the gradients come scaled by -lr."""
        for group, params in self.groups:
            lr, decay = group["lr"], group["weight_decay"]
            for name, p, _ in params:
                g = grads[name]
                if self.prescaled:
                    if decay:
                        p *= 1 - lr * decay
                    p += g
                else:
                    p -= lr * (g + decay * p) if decay else lr * g

    def _adamw(self, grads: dict[str, np.ndarray], scale: float) -> None:
        """torch.optim.AdamW (Loshchilov & Hutter 2019), its single-tensor arithmetic: decoupled decay, the moments'
        running averages, their bias corrections at this step."""
        for group, params in self.groups:
            lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for name, p, (step, m, v) in params:
                g = grads[name]
                step += 1
                p *= 1 - lr * decay
                m += (1 - beta1) * (g - m)
                v *= beta2
                v += (1 - beta2) * (g * g)
                t = float(step)
                denominator = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
                p -= (lr / (1 - beta1**t)) * (m / denominator)
