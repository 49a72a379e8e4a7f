"""metrics.json, a run's record: the one module that writes and reads it.

Training writes it when a run ends (its losses and counts, or where a sweep pruned it); whoever sees a run fail
writes the reason instead (the Hydra job, a sweep slot, the Slurm launcher). Sweeps read it to learn how a trial
ended, and the summaries to make their tables. torch-free, so every one of them can import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charmlp.rundir.atomic import atomic_write

FILE = "metrics.json"


def write(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    """A finished (or pruned) run's record, replacing any earlier one in one rename."""
    atomic_write(Path(run_dir) / FILE, lambda f: f.write((json.dumps(metrics, indent=2) + "\n").encode()))


def write_pruned(run_dir: str | Path, update: int, val_loss: float, seconds: float) -> None:
    """A pruned run: the update the sweep stopped it at and its best val/loss (no test, no train loss)."""
    write(run_dir, {"pruned_at": update, "val/loss": val_loss, "steps": update, "seconds": round(seconds, 2)})


def record_failure(run_dir: str | Path, message: str) -> None:
    """A failed run still leaves its record, so the summaries can say what went wrong; an existing record stays."""
    path = Path(run_dir) / FILE
    if not path.exists():
        path.write_text(json.dumps({"error": message}) + "\n")


def read(run_dir: str | Path) -> dict[str, Any]:
    """The record as the summaries show it: a missing, unreadable or malformed file is an `error` entry."""
    try:
        metrics = json.loads((Path(run_dir) / FILE).read_text())
    except FileNotFoundError:
        return {"error": f"no {FILE}"}
    except (OSError, ValueError) as err:
        return {"error": f"unreadable {FILE} ({type(err).__name__})"}
    return metrics if isinstance(metrics, dict) else {"error": f"{FILE} is not an object"}


def recorded_error(run_dir: str | Path) -> str | None:
    """The reason a failed run recorded (a job that scored a user error as inf), or None."""
    path = Path(run_dir) / FILE
    return read(run_dir).get("error") if path.is_file() else None


@dataclass(frozen=True)
class Ending:
    """How a run that got to its end ended: its best val/loss, and the update a sweep pruned it at (or None)."""

    val_loss: float
    pruned_at: int | None


def ending(run_dir: str | Path | None) -> Ending | None:
    """The run's ending by its record: None when it has none yet, or recorded a failure."""
    metrics = read(run_dir) if run_dir else {}
    if "val/loss" not in metrics or "error" in metrics:
        return None
    pruned = metrics.get("pruned_at")
    return Ending(float(metrics["val/loss"]), None if pruned is None else int(pruned))
