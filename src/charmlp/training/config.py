"""Hydra/OmegaConf glue: the resolvers the configs use, plain-container conversion, and config mistakes in one line."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from charmlp.errors import CharmlpError


def register_resolvers(project_root: str | Path) -> None:
    """`${project_root:}` (where train.py lives) and `${run_id:}` (this process, cached for the whole sweep)."""
    root = str(Path(project_root).resolve())
    OmegaConf.register_new_resolver("project_root", lambda: root, replace=True)
    # cached: Hydra copies the cache to every sweep job, so a sweep's jobs agree on their sweep directory
    OmegaConf.register_new_resolver("run_id", lambda: f"p{os.getpid()}", use_cache=True, replace=True)
    OmegaConf.register_new_resolver("slurm_tasks", slurm_tasks, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus, replace=True)
    # ${times:3,${model.emb_dim}}: a width that is a multiple of another (a transformer's queries, keys, values)
    OmegaConf.register_new_resolver("times", lambda a, b: int(a) * int(b), replace=True)


def slurm_tasks(devices: Any) -> int:
    """Slurm tasks per node for `trainer.devices`: one per device (Lightning takes each task as one rank)."""
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, ListConfig)):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit() and int(devices) > 0:
        return int(devices)
    return 1  # "auto" or -1: Lightning decides in the job; one task


def slurm_gpus(accelerator: Any, devices: Any) -> int | None:
    """GPUs per node to ask Slurm for: one per task with a GPU trainer, none otherwise (a CPU-only cluster refuses
    any GPU request)."""
    return slurm_tasks(devices) if str(accelerator).lower() in ("gpu", "cuda") else None


def to_plain(cfg: DictConfig | Any) -> Any:
    """Plain dicts and lists (resolved): what checkpoints, TensorBoard and torch.load(weights_only) accept."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def instantiate_group(group: str, args: Any, **kwargs: Any) -> Any:
    """An object of a config group from its `_target_` (the data, an optimizer, a schedule); a value its class refuses
    (weight_decay=-0.1, an unknown +data.key) is one line naming the group; charmlp's own errors pass unchanged."""
    try:
        return instantiate(args, **kwargs, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, CharmlpError):
            raise cause from None
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise CharmlpError(f"{group}={str(args.get('_target_', '')).rsplit('.', 1)[-1]}: {reason}") from None


def type_mistakes(cfg: DictConfig, defaults: DictConfig, prefix: str = "") -> list[str]:
    """Values of `cfg` whose type cannot stand in for the default's: `trainer.max_steps=many`, `model.dropout=[1]`.

    The configs carry no schema; the composed defaults (the same group options, no values overridden) are it.
    A null default takes anything, an int stands in for a float, and keys the defaults lack are new (`+key=`).
    """
    found = []
    for key, default in defaults.items_ex(resolve=False):
        if key not in cfg or OmegaConf.is_missing(defaults, key) or OmegaConf.is_interpolation(defaults, key):
            continue
        node, name = cfg._get_node(key), f"{prefix}{key}"
        value = node if isinstance(node, (DictConfig, ListConfig)) else node._value()  # unresolved, as given
        if isinstance(default, DictConfig) and isinstance(value, DictConfig):
            found += type_mistakes(value, default, f"{name}.")
        elif not _fits(value, default):
            found.append(f"{name}={value!r} is not {_kind(default)} (the default is {_show(default)})")
    return found


def _fits(value: Any, default: Any) -> bool:
    if default is None or (isinstance(value, str) and value.startswith("${")):
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) == isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, ListConfig)):
        return isinstance(value, (list, ListConfig))
    if isinstance(default, (dict, DictConfig)):
        return isinstance(value, (dict, DictConfig))
    return not isinstance(value, (list, dict, ListConfig, DictConfig))  # a str default takes any scalar


def _kind(default: Any) -> str:
    for kind, name in ((bool, "true or false"), (int, "an integer"), (float, "a number")):
        if isinstance(default, kind):
            return name
    return "a list" if isinstance(default, ListConfig) else "a mapping" if isinstance(default, DictConfig) else "text"


def _show(default: Any) -> str:
    return (
        OmegaConf.to_yaml(default).strip().replace("\n", " ")
        if isinstance(default, (DictConfig, ListConfig))
        else repr(default)
    )


def config_error_line(err: BaseException, conf_dir: Path) -> str:
    """Hydra's or OmegaConf's multi-line report of a config mistake as one line, with a guess at what was meant."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if "Could not override" in str(err) and key:  # a key that is not in the config: a typo, most likely
        guess = difflib.get_close_matches(key, known_keys(conf_dir), n=1)
        append = next((line.split(" use ", 1)[1] for line in lines if line.startswith("To append")), f"+{key}=...")
        hint = f"did you mean {guess[0]}? " if guess else ""
        return f"{key}: no such key in the config; {hint}(to add a new key: {append})"
    if "Available options" in str(err):  # an unknown option of a hydra/... group (train.py checks the others)
        after = lines[next(i for i, line in enumerate(lines) if "Available options" in line) + 1 :]
        options = [line for line in after[: next((i for i, x in enumerate(after) if ":" in x), len(after))]]
        return f"{lines[0]}; options: {', '.join(options)}"
    first = lines[0] if lines else type(err).__name__
    return re.sub(r"\s+", " ", first)[:300] + (" (see python train.py --help)" if "override" in first else "")


def known_keys(conf_dir: Path) -> list[str]:
    """Every key the config files under conf/ set, dotted (`model.hidden_dim`), for did-you-mean hints."""
    keys: set[str] = set()
    for path in [conf_dir / "train.yaml", *sorted(conf_dir.glob("*/*.yaml"))]:
        group = "" if path.parent == conf_dir else f"{path.parent.name}."
        if group in ("hydra.", "experiment.", "hparams_search."):
            continue
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        keys.update(f"{group}{k}" for k in _dotted(data) if not k.startswith("defaults"))
    return sorted(keys)


def _dotted(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    return [k for key, value in tree.items() for k in _dotted(value, f"{prefix}{key}.")]
