"""Callbacks that make the loop pleasant and safe: a progress bar in updates, and a graceful stop on signals."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import lightning as L
from tqdm import tqdm


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

    Lightning's own handling raises KeyboardInterrupt wherever it lands (maybe between an update and its
    LR step); asking the trainer to stop instead ends at a step boundary (at most `updates_per_step`
    updates, milliseconds, later) with every counter, the generator and the weights in step, so the
    checkpoint resumes exactly. A second signal falls back to the previous handler.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        def request_stop(signum: int, frame: FrameType | None) -> None:
            self.received = signum
            trainer.should_stop = True
            self._restore()

        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread (e.g. some launchers): keep Lightning's handling
            self._previous.clear()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None
