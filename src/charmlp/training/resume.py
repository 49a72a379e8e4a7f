"""What a resume may change: a checkpoint fixes its run's model, data and recipe; a resume only continues it.

Checked before anything is written or trained (train.py, through placement.RunPlacement), from the checkpoint
read without torch's unpickler (charmlp.sampling.ckpt_reader: a broken or hostile file is one line, not a traceback):

- fixed by the checkpoint (refused when the config differs): the model (but `dropout`, applied from the resume on,
  and `fold_embedding`, the same function), the data (the words of each split: data.path, splits, split_seed,
  dedup; block_size, batch_size), seed, the optimizer and its values (lr, betas, weight decay, ...; but the
  implementation flags `fused`/`foreach`), the schedule and its values, gradient clipping;
- free to change: trainer.max_steps (beyond the checkpoint's update), validation and logging intervals,
  diagnostics, threads, updates_per_step, fused_sgd, devices, world size, accelerator and precision.

A refused value is not silently ignored: torch's optimizer state would restore the checkpoint's lr and weight
decay whatever the config says, and .hydra/config.yaml and HPARAMS would record the value that was not used.

While Lightning loads the checkpoint, `check_resumable` holds its weights to the network's shapes and `carry_over`
moves the best checkpoint's bookkeeping into a new run directory (the module's on_load_checkpoint calls both).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from charmlp.errors import CharmlpError
from charmlp.sampling.checkpoint import DATAMODULE_KEY, _reason
from charmlp.sampling.ckpt_reader import READ_ERRORS, read_checkpoint
from charmlp.training.config import to_plain

# model keys a resume may change: dropout takes effect from the resume on; fold_embedding computes the same function
FREE_MODEL_KEYS = ("dropout", "fold_embedding")
FREE_OPTIMIZER_KEYS = ("fused", "foreach")  # how torch computes the same step
# what every Lightning training checkpoint of charmlp holds
TRAINING_KEYS = ("pytorch-lightning_version", "global_step", "state_dict", "hyper_parameters", "optimizer_states")
_checked: set[tuple] = set()  # (file, its mtime and size, the config) already found resumable in this process


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A charmlp training checkpoint as plain data (tensors as numpy arrays), or one CharmlpError saying why not."""
    path = Path(path)
    if path.is_dir():
        raise CharmlpError(
            f"ckpt_path {path} is a directory; give a checkpoint file, e.g. {path}/checkpoints/last.ckpt"
        )
    try:
        ckpt = read_checkpoint(path)
    except READ_ERRORS as err:
        raise CharmlpError(
            f"ckpt_path {path} is not a readable checkpoint ({_reason(err)}); it may be truncated or damaged: "
            "give another (checkpoints/best.ckpt or last.ckpt of the run)"
        ) from None
    missing = [key for key in TRAINING_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing or not isinstance(ckpt.get(DATAMODULE_KEY), dict):
        what = ", ".join(missing or [DATAMODULE_KEY])
        raise CharmlpError(
            f"ckpt_path {path} is not a charmlp training checkpoint (it has no {what}); resume from a "
            "checkpoints/last.ckpt or best.ckpt that train.py wrote"
        )
    return ckpt


def check_resume(cfg: DictConfig, path: str | Path) -> None:
    """Refuse, in one line, a config that differs from the checkpoint's run in anything the checkpoint fixes.

    Once per file in a process: train.py checks before Hydra writes, run(cfg) again for its other callers.
    """
    stat = Path(path).stat()
    fixed = [to_plain(cfg.get(k)) for k in ("model", "data", "optimizer", "scheduler", "seed")]
    key = (str(Path(path).absolute()), stat.st_mtime_ns, stat.st_size, repr(fixed), repr(to_plain(cfg.trainer)))
    if key in _checked:
        return
    ckpt = read_training_checkpoint(path)
    hparams = ckpt["hyper_parameters"] if isinstance(ckpt["hyper_parameters"], Mapping) else {}
    saved_data = ckpt[DATAMODULE_KEY]
    differ = differences(cfg, hparams, saved_data.get("recipe") or {})
    if differ:
        raise CharmlpError(
            f"checkpoint {path} cannot resume with {'; '.join(differ)}: a resume continues the run it was saved "
            "from (README, Resuming). Drop those overrides, or start a new run without ckpt_path"
        )
    if not same_words(cfg, saved_data.get("words")):
        raise CharmlpError(
            f"checkpoint {path} was trained on other words than data.path={cfg.data.path} gives (with data.splits, "
            "split_seed and dedup as configured); resume with the data settings of the run that wrote it (its "
            ".hydra/config.yaml), or start a new run without ckpt_path"
        )
    step, max_steps = int(ckpt.get("global_step", 0)), int(cfg.trainer.max_steps)
    if max_steps <= step:
        raise CharmlpError(
            f"checkpoint {path} is at update {step} already: raise trainer.max_steps above {step} to train on"
        )
    _checked.add(key)


def differences(cfg: DictConfig, hparams: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[str]:
    """`key=this run's value (checkpoint: its value)` for each value the checkpoint fixes and the config changes."""
    found = []

    def compare(name: str, ours: Any, theirs: Any) -> None:
        if ours != theirs:
            found.append(f"{name}={_show(ours)} (checkpoint: {_show(theirs)})")

    model = hparams.get("model") if isinstance(hparams.get("model"), Mapping) else {}
    block_size = cfg.data.get("block_size")  # null (whole words): the longest word + 1, fixed by the words compared
    ours_model = {
        **to_plain(cfg.model),
        "block_size": model.get("block_size") if block_size is None else int(block_size),
    }
    for key in sorted(set(model) | set(ours_model)):
        if key not in (*FREE_MODEL_KEYS, "vocab_size"):  # vocab_size: the data's, compared with the words
            compare("data.block_size" if key == "block_size" else f"model.{key}", ours_model.get(key), model.get(key))
    groups = (("optimizer", FREE_OPTIMIZER_KEYS), ("scheduler", ()))
    for group, free in groups:
        ours = to_plain(cfg.get(group)) or {}
        theirs = hparams.get(group) or {}
        if not isinstance(theirs, Mapping):
            continue
        if ours.get("_target_") != theirs.get("_target_"):
            compare(group, _option(ours), _option(theirs))
            continue
        for key in sorted((set(ours) | set(theirs)) - {"_target_", *free}):
            if key == "total_steps" and ours.get(key) != theirs.get(key):  # one-cycle: planned for max_steps
                found.append(
                    f"trainer.max_steps={cfg.trainer.max_steps}: its one-cycle schedule is planned for "
                    f"{theirs.get(key)} updates (resume with trainer.max_steps={theirs.get(key)})"
                )
                continue
            compare(f"{group}.{key}", ours.get(key), theirs.get(key))
    if "gradient_clip_val" in hparams:
        compare("trainer.gradient_clip_val", cfg.trainer.get("gradient_clip_val"), hparams["gradient_clip_val"])
    for key, name in (("batch_size", "data.batch_size"), ("seed", "seed")):
        if key in recipe:  # checkpoints from before recipes were recorded lack it
            compare(name, cfg.data.batch_size if key == "batch_size" else cfg.seed, recipe[key])
    return found


def same_words(cfg: DictConfig, saved: Any) -> bool:
    """Whether the config's data gives the checkpoint's train/val/test words (not only its characters)."""
    if not isinstance(saved, Mapping):
        return True  # nothing recorded to compare with
    from charmlp.data.windows import split_words  # torch: only when resuming
    from charmlp.data.words import read_words

    words = read_words(cfg.data.path)
    if cfg.data.get("dedup", False):
        words = list(dict.fromkeys(words))
    split = split_words(words, list(cfg.data.splits), int(cfg.data.split_seed))
    return all(saved.get(name) == "\n".join(split[name]) for name in split)


def _option(group: Mapping[str, Any]) -> str:
    return str(group.get("_target_", "none")).rsplit(".", 1)[-1]


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def check_resumable(checkpoint: Mapping[str, Any], module: Any) -> None:
    """The weights must fit this network (training.resume has compared the configs before training; this catches a
    checkpoint whose weights do not match its own config)."""
    shapes = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    saved_shapes = {name: tuple(t.shape) for name, t in checkpoint.get("state_dict", {}).items()}
    if saved_shapes != shapes:
        raise CharmlpError(
            f"checkpoint {module.trainer.ckpt_path} does not fit this config: it has other weight shapes; resume "
            "with the overrides of the run that wrote it (its .hydra/overrides.yaml), or start a new run without "
            "ckpt_path"
        )


def carry_over(state: dict[str, Any], dirpath: str, copy: bool) -> None:
    """A ModelCheckpoint's saved state, moved to `dirpath` with its files (best.ckpt, last.ckpt) copied there:
    Lightning would otherwise forget the best score when the directory changes (and warn on every rank), so the new
    directory's best.ckpt would cover only the part after the resume."""
    old = str(state["dirpath"])
    moved = lambda p: str(Path(dirpath) / Path(p).name) if p and str(Path(p).parent) == old else p  # noqa: E731
    paths = [p for p in (state.get("best_model_path"), state.get("last_model_path")) if p]
    if any(str(Path(p).parent) == old and not Path(p).is_file() for p in paths):
        return  # the files are not there to take along: Lightning starts the directory's bookkeeping afresh
    if copy:
        Path(dirpath).mkdir(parents=True, exist_ok=True)
        for p in paths:
            if str(Path(p).parent) == old and not Path(moved(p)).exists():
                shutil.copy2(p, moved(p))
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = moved(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {moved(k): v for k, v in state["best_k_models"].items()}
    state["dirpath"] = dirpath
