"""The one exception type for mistakes a user can make (bad data, config or checkpoint)."""


class CharmlpError(Exception):
    """A user-caused problem; entry scripts print its message as one line and exit with `exit_code`."""

    exit_code = 2


class TrainingInterrupted(CharmlpError):
    """Ctrl-C or SIGTERM stopped training after a whole update; last.ckpt holds it."""

    exit_code = 130


class Requeued(TrainingInterrupted):
    """Slurm's warning signal stopped training after a whole update and the job is back in the queue: it resumes
    from last.ckpt. Not a failure: the process ends without a result, so submitit waits for the next start."""

    exit_code = 0


class Pruned(Exception):
    """A sweep's pruner stopped this run at `update`; its best val/loss so far was `val_loss`."""

    def __init__(self, update: int, val_loss: float) -> None:
        super().__init__(f"pruned at update {update} (val/loss {val_loss:.4f})")
        self.update, self.val_loss = update, val_loss

    def __reduce__(self) -> tuple:  # pickled back from a Slurm job with its own arguments
        return (Pruned, (self.update, self.val_loss))
