"""What sampling needs from a training checkpoint, read without torch (see ckpt_reader)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charmlp.data.vocab import Vocabulary
from charmlp.errors import CharmlpError
from charmlp.sampling.ckpt_reader import READ_ERRORS, read_checkpoint
from charmlp.sampling.generate import Network

DATAMODULE_KEY = "NamesDataModule"  # Lightning stores a datamodule's state_dict under its class name
NET_PREFIX = "net."  # the LightningModule's network attribute, net, in its state_dict's keys
OLD_NET_PREFIX = "mlp."  # what checkpoints written before the floor plan (b040acf and earlier) call it


@dataclass
class TrainedModel:
    net: Network
    vocab: Vocabulary
    words: dict[str, list[str]]  # the train/val/test words it was trained and evaluated on
    path: Path
    model: dict  # hyper_parameters.model: the config that rebuilds the network (in torch too: training.evaluate)


def load_trained(path: str | Path) -> TrainedModel:
    """Rebuild the network, its vocabulary and its split from a checkpoint alone (GPU or CPU saved).

    Any file gives either a TrainedModel or one CharmlpError: the file may be damaged or hostile.
    """
    path = Path(path)
    if not path.is_file():
        raise CharmlpError(f"checkpoint {path} does not exist; pass ckpt=RUN_DIR/checkpoints/best.ckpt")
    try:
        ckpt = read_checkpoint(path)
    except READ_ERRORS as err:
        raise CharmlpError(f"{path} is not a readable charmlp checkpoint ({_reason(err)})") from None
    try:
        hparams = _get(ckpt, "hyper_parameters", "the checkpoint")
        vocab = Vocabulary.from_dict(_get(hparams, "vocab", "hyper_parameters"))
        model = _as_dict(_get(hparams, "model", "hyper_parameters"), "hyper_parameters.model")
        state = _as_dict(_get(ckpt, "state_dict", "the checkpoint"), "state_dict")
        net = Network.from_state(model, network_state(state), vocab_size=len(vocab))
        words = _split_words(ckpt)
    except CharmlpError as err:
        raise CharmlpError(f"{path} is not a charmlp checkpoint: {err}") from None
    except READ_ERRORS as err:  # a safety net for whatever else a hostile file's objects do
        raise CharmlpError(f"{path} is not a charmlp checkpoint ({_reason(err)})") from None
    return TrainedModel(net, vocab, words, path, model)


def network_state(state: dict) -> dict:
    """The network's own entries of a LightningModule's state_dict, without the prefix (C, W1, layers.0.weight):
    `net.` keys, or an older checkpoint's `mlp.` ones."""
    prefix = OLD_NET_PREFIX if any(isinstance(k, str) and k.startswith(OLD_NET_PREFIX) for k in state) else NET_PREFIX
    return {k.removeprefix(prefix): v for k, v in state.items() if isinstance(k, str) and k.startswith(prefix)}


def upgrade_state_dict(checkpoint: dict) -> None:
    """An older checkpoint's `mlp.` weights renamed `net.` in place, so today's module loads (and resumes) it."""
    state = checkpoint.get("state_dict")
    if isinstance(state, dict) and any(isinstance(k, str) and k.startswith(OLD_NET_PREFIX) for k in state):
        checkpoint["state_dict"] = {
            NET_PREFIX + k.removeprefix(OLD_NET_PREFIX) if isinstance(k, str) and k.startswith(OLD_NET_PREFIX) else k: v
            for k, v in state.items()
        }


def _as_dict(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise CharmlpError(f"{where} is not a dict but {type(data).__name__}")
    return data


def _get(data: Any, key: str, where: str) -> Any:
    if key not in _as_dict(data, where):
        raise CharmlpError(f"{where} has no {key!r}")
    return data[key]


def _split_words(ckpt: dict) -> dict[str, list[str]]:
    """The datamodule's train/val/test words, one string a split (a checkpoint may carry none)."""
    saved = ckpt.get(DATAMODULE_KEY, {})
    splits = saved.get("words", {}) if isinstance(saved, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in splits.items()):
        raise CharmlpError(f"{DATAMODULE_KEY}.words must map split names to strings")
    return {split: text.split("\n") if text else [] for split, text in splits.items()}


def _reason(err: BaseException) -> str:
    """The first line of an error's message, cut short, for a one-line report."""
    text = str(err).strip()
    return text.splitlines()[0][:120] if text else type(err).__name__
