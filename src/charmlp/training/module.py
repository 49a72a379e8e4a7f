"""The LightningModule: any family's network (`net`), its updates, the stepped learning rate, evaluation and what
goes to TensorBoard."""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from charmlp.data.batches import MinibatchSampler
from charmlp.errors import CharmlpError
from charmlp.model.network import build_network
from charmlp.sampling.checkpoint import upgrade_state_dict
from charmlp.training import lightning_internals, updates
from charmlp.training.config import instantiate_group
from charmlp.training.diagnostics import Diagnostics, Reading, write_reading
from charmlp.training.diagnostics import layout as diagnostics_layout
from charmlp.training.loss import cross_entropy, predictions
from charmlp.training.resume import carry_over, check_resumable

log = logging.getLogger("charmlp")
HISTORY_KEY = "loss_history"  # checkpoint entry: the logged curves, for loss.png after a resume
SECONDS_KEY = "train_seconds"  # checkpoint entry: seconds of training up to this checkpoint, over every resume
# TensorBoard's CUSTOM SCALARS tab opens on the loss: train and val on one chart
LOSS_LAYOUT = {"loss": {"train/loss and val/loss (nats per character)": ["Multiline", ["train/loss", "val/loss"]]}}


class NonFiniteLossError(CharmlpError):
    """The loss became NaN or infinite: the weights after that update are useless."""


class CharLMModule(L.LightningModule):
    """Trains any family's network (`net`) with one update per minibatch, `updates_per_step` updates per Lightning
    step.

    Lightning's own per-step work (hooks, progress, logging) costs more than an update of these tiny models, so
    each training step runs a short loop of real updates; `trainer.global_step` still counts updates. How one
    update runs (the hand-written numpy update, plain torch, or Lightning's manual backward) is
    charmlp.training.updates' choice, made once the optimizer and the strategy exist.
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        vocab: Mapping[str, Any] | None = None,
        updates_per_step: int = 100,
        fused_sgd: bool = True,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        diagnostics: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if updates_per_step < 1:
            raise CharmlpError(f"updates_per_step must be at least 1, got {updates_per_step}")
        updates.check_clipping(gradient_clip_val, gradient_clip_algorithm)
        # plain containers only, so checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["diagnostics"])  # how a run is watched is not part of the model
        self.automatic_optimization = False
        self.net = build_network(dict(model))  # older checkpoints name it mlp: upgrade_state_dict
        self.updates_per_step = updates_per_step
        self._eval_sums: list[torch.Tensor] = []
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)  # for loss.png
        self.updates_done = 0  # in this process, for the updates/s figure
        self.seconds_before = 0.0  # of training before this process, for a resumed run's total (the checkpoint's)
        self._fit_started = time.perf_counter()
        self.fused_sgd = fused_sgd
        self.update: updates.Update | None = None  # chosen in on_fit_start, once the optimizer and strategy exist
        # Lightning refuses Trainer(gradient_clip_val) under manual optimization; the update clips itself
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        try:
            self.diagnostics = Diagnostics(
                **(diagnostics or {"every": 0}), clip_val=gradient_clip_val, clip_algorithm=gradient_clip_algorithm
            )
        except TypeError as err:  # +diagnostics.key=... that the group does not have
            raise CharmlpError(f"diagnostics: {err}; see conf/diagnostics/default.yaml for its keys") from None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.net(idx)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        if not 0 < hp.optimizer.get("lr", 1) < math.inf:
            raise CharmlpError(f"optimizer.lr must be positive, got {hp.optimizer['lr']}")
        args = dict(hp.optimizer)
        if args.get("fused") and self.gradient_clip_val is not None and "mixed" in str(self.trainer.precision):
            # Lightning's mixed precision will not clip for an optimizer that unscales its own gradients (fused)
            args["fused"] = False
        optimizer = instantiate_group("optimizer", args, params=self.parameters())
        if not hp.scheduler:
            return {"optimizer": optimizer}
        scheduler = instantiate_group("scheduler", dict(hp.scheduler), optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()
        self.update = updates.choose(
            self, self.optimizers(), self.fused_sgd, self.gradient_clip_val, self.gradient_clip_algorithm
        )
        if self.trainer.is_global_zero:
            log.info("updates: %s", self.update.name)

    def on_train_start(self) -> None:
        if self.trainer.is_global_zero:  # the loss chart first; the diagnostics' charts after it, when on
            health = diagnostics_layout(self.diagnostics.saturated) if self.diagnostics.every else {}
            layout = {**LOSS_LAYOUT, **health}
            for writer in self._tensorboards():
                writer.add_custom_scalars(layout)
        # Lightning counts its batches (steps), and validates every val_check_interval // updates_per_step of them.
        # A resume must count the updates done as batches of this run's updates_per_step: the checkpoint's count is
        # in its own (another updates_per_step, or a stop mid step when max_steps is not a multiple of it, where the
        # next step finishes that one). Then validation lands on the same updates as in a run that never stopped.
        # Lightning has no API for this (charmlp.training.lightning_internals).
        lightning_internals.set_batches_done(self.trainer, self.global_step // self.updates_per_step)

    def training_step(self, sampler: MinibatchSampler, batch_idx: int) -> None:
        optimizer, scheduler, trainer = self.optimizers(), self.lr_schedulers(), self.trainer
        todo = self.updates_per_step - self.global_step % self.updates_per_step  # ends on a multiple
        if trainer.max_steps >= 0:
            todo = min(todo, trainer.max_steps - self.global_step)
        update = self.update
        xs, ys = update.inputs(*sampler.draw(todo))
        losses, first = [], self.global_step
        due = self.diagnostics.due(first, todo) if trainer.is_global_zero else None
        for i, (x, y) in enumerate(zip(xs, ys)):
            if i == due:  # read the network's health around this update, leaving it as it would be
                x_, y_, context = torch.as_tensor(x), torch.as_tensor(y), trainer.precision_plugin.forward_context()
                with self.diagnostics.around(self.net, x_, y_, first + i + 1, context):
                    losses.append(update(x, y))
            else:
                losses.append(update(x, y))
            if scheduler is not None:
                scheduler.step()
        if not update.counts_itself:
            lightning_internals.count_updates(trainer, todo)
        self.updates_done += todo
        self._check_counted(first, todo)
        self._average_running_stats()
        losses = torch.tensor(losses) if isinstance(losses[0], float) else torch.stack(losses)
        self._check_finite(losses, first_update=first + 1)
        if self.global_step == trainer.max_steps:
            trainer.should_stop = True  # makes Lightning validate once more before it stops
        # Lightning logs self.log() and stock callbacks (LearningRateMonitor, ...) against the Lightning batches
        # that stepped, one per `updates_per_step` updates; it adds 1 after this step. Counting updates there
        # puts every logged metric on the same x-axis as ours (charmlp.training.lightning_internals).
        lightning_internals.set_logging_step(trainer, self.global_step - 1)
        self.log_scalars({"train/loss": losses.mean(), "lr": optimizer.param_groups[0]["lr"]})
        if due is not None:
            self._log_reading(self.diagnostics.last)

    def _log_reading(self, reading: Reading) -> None:
        self.log_scalars(reading.scalars, step=reading.step)
        for writer in self._tensorboards():
            write_reading(writer, reading)

    def _tensorboards(self) -> list[Any]:
        return [logger.experiment for logger in self.loggers if isinstance(logger, TensorBoardLogger)]

    def _average_running_stats(self) -> None:
        """Under DDP each rank's batch norm moves its running statistics with its own batches; their mean over the
        ranks after each Lightning step is exactly the running average of the ranks' mean batch statistics (the
        update is linear and every rank started the step from the same values), and keeps the ranks equal."""
        if self.trainer.world_size > 1 and self.net.has_running_stats:
            for buffer in self.net.buffers():
                buffer.copy_(self.trainer.strategy.reduce(buffer.clone(), reduce_op="mean"))

    def _check_counted(self, first: int, todo: int) -> None:
        """Fail loudly if Lightning stopped counting our updates: max_steps would never end the run."""
        if self.global_step != first + todo:
            raise RuntimeError(
                f"Lightning counted {self.global_step - first} of {todo} updates (global_step {self.global_step}): "
                f"charmlp counts updates through LightningOptimizer's step hooks, tested with "
                f"{lightning_internals.TESTED} (charmlp.training.lightning_internals); install that version"
            )

    @staticmethod
    def _check_finite(losses: torch.Tensor, first_update: int) -> None:
        bad = ~torch.isfinite(losses)
        if bad.any():  # one host sync per step, not per update
            update = first_update + int(bad.nonzero()[0])
            raise NonFiniteLossError(
                f"the training loss became {losses[bad][0].item()} at update {update}; the checkpoints "
                "written before it are kept. Lower optimizer.lr or check the data"
            )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_sums.append(self._loss_sum(batch))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_sums.append(self._loss_sum(batch))

    def on_validation_epoch_end(self) -> None:
        self._log_split_loss("val/loss")

    def on_test_epoch_end(self) -> None:
        self._log_split_loss("test/loss")

    def _loss_sum(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.stack(
            # in float32: a sum over 65,536 examples overflows float16 (16-true), and bf16 would round it coarsely
            [cross_entropy(self.net(x).float(), y, reduction="sum"), predictions(y).float()]
        )

    def _log_split_loss(self, name: str) -> None:
        """Mean over every prediction of the split (weighted by predictions, not by batches)."""
        loss_sum, count = torch.stack(self._eval_sums).sum(0)
        self._eval_sums.clear()
        loss = loss_sum / count
        # every DDP rank evaluates the whole split, so the mean across ranks is the same number
        self.log(name, loss, logger=False, sync_dist=True)  # for checkpointing and the callbacks
        self.log_scalars({name: loss})

    def log_scalars(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Write to the loggers against the number of updates (Lightning's own x-axis counts steps): `step`, or
        the updates done."""
        step = self.global_step if step is None else step
        values = {k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            self.history[k].append((step, v))
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # dropout draws from torch's global generator: keep it so a resumed run continues the same trajectory
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        # the curves so far, so loss.png of a resumed run shows the whole run (plain lists: weights_only loads)
        checkpoint[HISTORY_KEY] = {name: [list(point) for point in points] for name, points in self.history.items()}
        checkpoint[SECONDS_KEY] = self.seconds_before + time.perf_counter() - self._fit_started

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_state_dict(checkpoint)  # older checkpoints name the network mlp; Lightning loads it after this hook
        if self.trainer.state.fn != "fit":  # trainer.test(ckpt_path="best") reloads this run's own weights
            return
        check_resumable(checkpoint, self)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        saved = checkpoint.get(HISTORY_KEY, {})
        self.history = defaultdict(list, {name: [tuple(p) for p in points] for name, points in saved.items()})
        self.seconds_before = float(checkpoint.get(SECONDS_KEY, 0.0))
        for callback in self.trainer.checkpoint_callbacks:  # a resume into another directory takes its best along
            state = checkpoint.get("callbacks", {}).get(callback.state_key)
            if isinstance(state, dict) and state.get("dirpath") not in (None, callback.dirpath):
                carry_over(state, str(callback.dirpath), copy=self.trainer.is_global_zero)
