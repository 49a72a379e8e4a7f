"""Callbacks that make the loop pleasant and safe: a progress bar in updates, and a graceful stop on signals."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import lightning as L
import torch
from tqdm import tqdm

from charmlp.cluster import slurm


class UpdateProgressBar(L.Callback):
    """Progress in SGD updates out of `trainer.max_steps` (Lightning's own bar counts steps), on stderr."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            total = trainer.max_steps if trainer.max_steps >= 0 else None
            self.bar = tqdm(
                total=total,
                initial=trainer.global_step,
                unit="upd",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
                smoothing=0.1,
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if self.bar is not None:
            self.bar.update(trainer.global_step - self.bar.n)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        val = trainer.callback_metrics.get("val/loss")
        if self.bar is not None and val is not None:
            self.bar.set_postfix(val_loss=f"{float(val):.4f}", refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)


class GracefulStop(L.Callback):
    """Ctrl-C or SIGTERM ends training after the Lightning step in progress, with a validation and last.ckpt.

    Lightning's own handling stops without a checkpoint (SIGINT raises wherever it lands, maybe between an
    update and its LR step), and under DDP its SIGTERM handler runs a collective inside the handler, which hangs
    when the signal reaches one rank only. Here the handler only records the signal; at the end of each Lightning
    step the ranks agree on it (one tiny reduce, only under DDP) and all of them stop after that same step (at
    most `updates_per_step` updates later) with every counter, the generator and the weights in step, so the
    checkpoint resumes exactly. A second signal to the same process aborts at once: KeyboardInterrupt,
    Lightning's own shutdown, which also ends the other ranks. In a Slurm job USR1 and USR2 (the warning before a
    time limit or a preemption) stop the same way, and the run then requeues the job (charmlp.cluster.slurm).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None  # the signal this process got
        self.agreed: int | None = None  # the signal every rank stopped for
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            if self.received is not None:
                raise KeyboardInterrupt
            self.received = signum

        signals = self.SIGNALS + (slurm.REQUEUE_SIGNALS if slurm.in_job() else ())
        try:
            for sig in signals:
                self._previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread (e.g. some launchers): keep Lightning's handling
            self._previous.clear()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        self._agree(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._agree(trainer)  # a signal after the last step (in the final validation) still counts
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _agree(self, trainer: L.Trainer) -> None:
        """Every rank learns whether any rank got a signal (the highest signal number wins) and stops if so."""
        received = self.received or 0
        if trainer.world_size > 1:  # every rank runs this hook at the same step, so the collective pairs up
            flag = torch.tensor(received, device=trainer.strategy.root_device)
            received = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if received:
            self.agreed = received
            trainer.should_stop = True  # Lightning then validates and ModelCheckpoint writes last.ckpt

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def requeue(self) -> bool:
        """Whether the ranks stopped for Slurm's warning signal, so the job should go back in the queue."""
        return self.agreed in slurm.REQUEUE_SIGNALS

    @property
    def signal_name(self) -> str | None:
        """The name of the signal every rank stopped for (SIGTERM, SIGINT), or None."""
        return signal.Signals(self.agreed).name if self.agreed is not None else None
