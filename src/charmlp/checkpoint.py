"""Reading what sampling needs from a training checkpoint: torch only, safe `weights_only` loading."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from charmlp.errors import CharmlpError
from charmlp.mlp import MLP
from charmlp.vocab import Vocabulary

DATAMODULE_KEY = "NamesDataModule"  # Lightning stores a datamodule's state_dict under its class name


@dataclass
class TrainedModel:
    model: MLP
    vocab: Vocabulary
    words: dict[str, list[str]]  # the train/val/test words it was trained and evaluated on
    path: Path


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """Rebuild the MLP, its vocabulary and its split from a checkpoint alone, on any device."""
    path = Path(path)
    if not path.is_file():
        raise CharmlpError(f"checkpoint {path} does not exist; pass ckpt=RUN_DIR/checkpoints/best.ckpt")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise CharmlpError(f"{path} is not a readable checkpoint ({reason})") from None
    try:
        hparams = ckpt["hyper_parameters"]
        vocab = Vocabulary.from_dict(hparams["vocab"])
        model = MLP(**hparams["model"])
        state = {k.removeprefix("mlp."): v for k, v in ckpt["state_dict"].items() if k.startswith("mlp.")}
        model.load_state_dict(state)
        words = {k: v.split("\n") if v else [] for k, v in ckpt.get(DATAMODULE_KEY, {}).get("words", {}).items()}
    except (KeyError, TypeError, RuntimeError, CharmlpError) as err:
        raise CharmlpError(f"{path} is not a charmlp checkpoint (missing or wrong {err})") from None
    model.to(device).eval()
    return TrainedModel(model, vocab, words, path)
