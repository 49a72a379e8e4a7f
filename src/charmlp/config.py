"""Hydra/OmegaConf glue: the resolvers the configs use, and plain-container conversion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def register_resolvers(project_root: str | Path) -> None:
    """`${project_root:}` (where train.py lives) and `${run_id:}` (this process, cached for the whole sweep)."""
    root = str(Path(project_root).resolve())
    OmegaConf.register_new_resolver("project_root", lambda: root, replace=True)
    # cached: Hydra copies the cache to every sweep job, so a sweep's jobs agree on their sweep directory
    OmegaConf.register_new_resolver("run_id", lambda: f"p{os.getpid()}", use_cache=True, replace=True)


def to_plain(cfg: DictConfig | Any) -> Any:
    """Plain dicts and lists (resolved): what checkpoints, TensorBoard and torch.load(weights_only) accept."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
