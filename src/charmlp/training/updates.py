"""The three ways one update can run, each a named object, and `choose`, which holds every reason for picking one.

All three give the numbers of F.cross_entropy + backward + the configured torch optimizer's step; they differ in
what they skip. Lightning's per-update machinery (precision plugin, backward and optimizer hooks, closures) costs
more than an update of these small models, so the cheapest path that is still exact is taken:

- HandWritten: forward, the layers' hand-written backward and SGD's or AdamW's step in numpy, on the tensors' own
  memory (charmlp.training.hand_step), one fp32 process on the CPU whose layers all have a backward.
- PlainTorch: autograd and the torch optimizer directly, without Lightning's wrapping, on one fp32 process.
- LightningManual: Lightning's manual_backward + clip_gradients + optimizer.step(), for DDP, mixed precision
  and gradient clipping, which hook into those calls.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from charmlp.errors import CharmlpError
from charmlp.training import hand_step, lightning_internals
from charmlp.training.loss import cross_entropy


class HandWritten:
    """hand_step.HandStep: numpy forward, hand-written backward and optimizer step; no autograd, no hooks. Lightning
    counts its updates once per Lightning step (`counts_itself`)."""

    name = "hand-written backward (numpy)"
    counts_itself = False  # the module counts the step's updates in one go (lightning_internals.count_updates)

    def __init__(self, net: torch.nn.Module, optimizer: Any) -> None:
        self.step, self.optimizer = hand_step.HandStep(net, optimizer.optimizer), optimizer
        lightning_internals.mark_stepped(optimizer)  # the hand step is the optimizer's step

    def __call__(self, x: Any, y: Any) -> float:
        return self.step(x, y)

    inputs = staticmethod(hand_step.HandStep.inputs)  # numpy views, made once per Lightning step


def as_given(xs: Any, ys: Any) -> tuple[Any, Any]:
    return xs, ys


class PlainTorch:
    """Autograd and the torch optimizer's step, without Lightning's wrapping; plain SGD without weight decay as its
    own arithmetic, p += -lr * grad, without torch.optim.SGD's per-step bookkeeping."""

    name = "plain torch"
    inputs = staticmethod(as_given)
    counts_itself = True  # through the step hooks, as LightningOptimizer.step would

    def __init__(self, net: torch.nn.Module, optimizer: Any, plain_sgd: bool) -> None:
        self.net, self.optimizer, self.plain_sgd = net, optimizer, plain_sgd
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        if plain_sgd:
            lightning_internals.mark_stepped(optimizer)  # the loop below is the optimizer's step

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(self.net(x), y)
        for p in self.params:  # optimizer.zero_grad(set_to_none=True), without its profiler wrapping
            p.grad = None
        loss.backward()
        lightning_internals.before_step(self.optimizer)
        if self.plain_sgd:
            lr = self.optimizer.optimizer.param_groups[0]["lr"]
            with torch.no_grad():
                for p in self.params:
                    if p.grad is not None:  # as torch.optim.SGD: a parameter the loss did not use stays
                        p.add_(p.grad, alpha=-lr)
        else:
            self.optimizer.optimizer.step()
        lightning_internals.after_step(self.optimizer)
        return loss.detach()


class LightningManual:
    """Autograd through Lightning: manual_backward, its own clipping (unscaled under mixed precision), step()."""

    name = "Lightning manual backward"
    inputs = staticmethod(as_given)
    counts_itself = True  # optimizer.step() is LightningOptimizer's

    def __init__(self, module: L.LightningModule, optimizer: Any, clip_val: float | None, clip_algorithm: str) -> None:
        self.module, self.optimizer, self.clip_val, self.clip_algorithm = module, optimizer, clip_val, clip_algorithm

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(self.module.net(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.module.manual_backward(loss)
        if self.clip_val is not None:
            self.module.clip_gradients(self.optimizer, self.clip_val, self.clip_algorithm)
        self.optimizer.step()
        return loss.detach()


def check_clipping(clip_val: float | None, clip_algorithm: str) -> None:
    """trainer.gradient_clip_val and _algorithm as LightningManual clips by them, or one line saying what is wrong."""
    if clip_val is not None and not 0 < clip_val < math.inf:
        raise CharmlpError(f"trainer.gradient_clip_val must be positive (or null: no clipping), got {clip_val}")
    if clip_algorithm not in ("norm", "value"):
        raise CharmlpError(f"trainer.gradient_clip_algorithm must be norm or value, got {clip_algorithm!r}")


def choose(
    module: L.LightningModule, optimizer: Any, by_hand: bool, clip_val: float | None, clip_algorithm: str
) -> Update:
    """The cheapest exact update for this run (`by_hand`: the config's fused_sgd); every reason for a path is here."""
    torch_optimizer, trainer, net = optimizer.optimizer, module.trainer, module.net
    group = torch_optimizer.param_groups[0]
    plain_sgd = (
        type(torch_optimizer) is torch.optim.SGD
        and len(torch_optimizer.param_groups) == 1
        and not (group["momentum"] or group["nesterov"] or group["maximize"])
    )
    # DDP and mixed precision hook into autograd and Lightning's backward; clipping goes through Lightning's
    one_process_fp32 = trainer.world_size == 1 and str(trainer.precision) in ("32-true", "32")
    if not one_process_fp32 or clip_val is not None:
        return LightningManual(module, optimizer, clip_val, clip_algorithm)
    # the hand step: CPU float32, layers that all have a backward, SGD without momentum or AdamW (hand_step.unsupported)
    if by_hand and hand_step.unsupported(net, torch_optimizer) is None:
        return HandWritten(net, optimizer)
    return PlainTorch(net, optimizer, plain_sgd=plain_sgd and not group["weight_decay"])


Update = HandWritten | PlainTorch | LightningManual
"""Each is called as update(x, y) -> the loss before it (a float, or a tensor left on its device), on the minibatches
as its `inputs(xs, ys)` gives them."""
