"""The three ways one update can run, each a named object, and `choose`, which holds every reason for picking one.

All three give the numbers of F.cross_entropy + backward + the configured torch optimizer's step; they differ in
what they skip. Lightning's per-update machinery (precision plugin, backward and optimizer hooks, closures) costs
more than an update of these small models, so the cheapest path that is still exact is taken:

- HandWrittenSGD: the lecture's MLP's `sgd_step_` (gradients by hand, no autograd), plain SGD, one fp32 process.
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
from charmlp.model.lecture import LectureMLP
from charmlp.training import lightning_internals
from charmlp.training.loss import cross_entropy


class HandWrittenSGD:
    """Plain SGD by LectureMLP.sgd_step_: hand-written gradients, no autograd, no hooks (1.5x the seed's loop)."""

    name = "hand-written SGD"

    def __init__(self, net: LectureMLP, optimizer: Any) -> None:
        self.sgd_step, self.optimizer = net.sgd_step_, optimizer  # bound once: nn.Module's lookup shows per update
        lightning_internals.mark_stepped(optimizer)  # sgd_step_ is the optimizer's step

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lightning_internals.before_step(self.optimizer)  # what LightningOptimizer.step does around a step
        group = self.optimizer.optimizer.param_groups[0]  # read each time: a resume's load_state_dict replaces them
        loss = self.sgd_step(x, y, lr=group["lr"], weight_decay=group["weight_decay"])
        lightning_internals.after_step(self.optimizer)  # counts the update
        return loss


class PlainTorch:
    """Autograd and the torch optimizer's step, without Lightning's wrapping; plain SGD without weight decay as its
    own arithmetic, p += -lr * grad, without torch.optim.SGD's per-step bookkeeping."""

    name = "plain torch"

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
    module: L.LightningModule, optimizer: Any, fused_sgd: bool, clip_val: float | None, clip_algorithm: str
) -> Update:
    """The cheapest exact update for this run; every reason for a path is here."""
    torch_optimizer, trainer, net = optimizer.optimizer, module.trainer, module.net
    group = torch_optimizer.param_groups[0]
    plain_sgd = (
        type(torch_optimizer) is torch.optim.SGD
        and len(torch_optimizer.param_groups) == 1
        and not (group["momentum"] or group["nesterov"] or group["maximize"])
    )
    # DDP and mixed precision hook into autograd and Lightning's backward; clipping needs the global gradient norm,
    # which an update that applies each layer's gradient as soon as it has it (sgd_step_) never holds
    one_process_fp32 = trainer.world_size == 1 and str(trainer.precision) in ("32-true", "32")
    if not one_process_fp32 or clip_val is not None:
        return LightningManual(module, optimizer, clip_val, clip_algorithm)
    # sgd_step_ knows the lecture's MLP only: tanh layers, no dropout, the embedding not folded
    hand_written = isinstance(net, LectureMLP) and not (net.dropout or net.fold_embedding)
    if fused_sgd and plain_sgd and hand_written:
        return HandWrittenSGD(net, optimizer)
    return PlainTorch(net, optimizer, plain_sgd=plain_sgd and not group["weight_decay"])


Update = HandWrittenSGD | PlainTorch | LightningManual  # each is called as update(x, y) -> the loss before it
