"""The one exception type for mistakes a user can make (bad data, config or checkpoint)."""


class CharmlpError(Exception):
    """A user-caused problem; entry scripts print its message as one line and exit with `exit_code`."""

    exit_code = 2


class TrainingInterrupted(CharmlpError):
    """Ctrl-C or SIGTERM stopped training after a whole update; last.ckpt holds it."""

    exit_code = 130
