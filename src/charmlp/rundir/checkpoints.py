"""Finding run outputs on disk (no torch, Lightning or Hydra): the newest checkpoint of the runs under ./outputs."""

from __future__ import annotations

import logging
from pathlib import Path

from charmlp.errors import CharmlpError

log = logging.getLogger("charmlp")

RUN_ROOTS = ("outputs", "multirun")


def newest_checkpoint(name: str, roots: tuple[str, ...] = RUN_ROOTS) -> Path | None:
    """The most recently written `checkpoints/<name>` below ./outputs and ./multirun, or None."""
    found = [p for root in roots if Path(root).is_dir() for p in Path(root).glob(f"**/checkpoints/{name}")]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def resolve_ckpt_path(ckpt_path: str | None) -> str | None:
    """The checkpoint to resume from: the path as given, or for "last" the newest run's last.ckpt."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = newest_checkpoint("last.ckpt")
        if found is None:
            raise CharmlpError("ckpt_path=last: no run under ./outputs or ./multirun has a checkpoints/last.ckpt")
        return str(found)
    if Path(ckpt_path).is_dir():
        raise CharmlpError(
            f"ckpt_path {ckpt_path} is a directory; give a checkpoint file, e.g. {ckpt_path}/checkpoints/last.ckpt"
        )
    if not Path(ckpt_path).is_file():
        raise CharmlpError(f"ckpt_path {ckpt_path} does not exist; give a checkpoint file or ckpt_path=last")
    return ckpt_path
