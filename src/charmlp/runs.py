"""Finding run outputs on disk (no Lightning): the newest checkpoint of the runs under the current folder."""

from __future__ import annotations

from pathlib import Path

RUN_ROOTS = ("outputs", "multirun")


def newest_checkpoint(name: str, roots: tuple[str, ...] = RUN_ROOTS) -> Path | None:
    """The most recently written `checkpoints/<name>` below ./outputs and ./multirun, or None."""
    found = [p for root in roots if Path(root).is_dir() for p in Path(root).glob(f"**/checkpoints/{name}")]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)
