"""What sampling needs from a training checkpoint, read without torch (see ckpt_reader)."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

from charmlp.ckpt_reader import read_checkpoint
from charmlp.errors import CharmlpError
from charmlp.sampling import Network
from charmlp.vocab import Vocabulary

DATAMODULE_KEY = "NamesDataModule"  # Lightning stores a datamodule's state_dict under its class name


@dataclass
class TrainedModel:
    net: Network
    vocab: Vocabulary
    words: dict[str, list[str]]  # the train/val/test words it was trained and evaluated on
    path: Path


def load_trained(path: str | Path) -> TrainedModel:
    """Rebuild the network, its vocabulary and its split from a checkpoint alone (GPU or CPU saved)."""
    path = Path(path)
    if not path.is_file():
        raise CharmlpError(f"checkpoint {path} does not exist; pass ckpt=RUN_DIR/checkpoints/best.ckpt")
    try:
        ckpt = read_checkpoint(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CharmlpError(f"{path} is not a readable charmlp checkpoint ({reason})") from None
    try:
        hparams = ckpt["hyper_parameters"]
        vocab = Vocabulary.from_dict(hparams["vocab"])
        state = {k.removeprefix("mlp."): v for k, v in ckpt["state_dict"].items() if k.startswith("mlp.")}
        net = Network.from_state(state, block_size=int(hparams["model"]["block_size"]))
        saved = ckpt.get(DATAMODULE_KEY, {}).get("words", {})
        words = {split: text.split("\n") if text else [] for split, text in saved.items()}
    except (KeyError, TypeError, AttributeError, CharmlpError) as err:
        raise CharmlpError(f"{path} is not a charmlp checkpoint (no {err})") from None
    if net.C.shape[0] != len(vocab):
        raise CharmlpError(f"{path} is inconsistent: C has {net.C.shape[0]} rows for {len(vocab)} characters")
    return TrainedModel(net, vocab, words, path)
