"""Exact split losses of a network: every example of a split (train, val, test) and of the held-out words that are
not training words, as metrics.json, the end-of-run table and eval.py give them."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charmlp.data.batches import UNSEEN_SPLITS, SplitBatches
from charmlp.data.words import read_words
from charmlp.errors import CharmlpError
from charmlp.model.network import LayerNet, build_network
from charmlp.rundir.checkpoints import newest_checkpoint
from charmlp.sampling.checkpoint import load_trained
from charmlp.training.datamodule import NamesDataModule
from charmlp.training.loss import cross_entropy, predictions


@torch.no_grad()
def split_loss(model: LayerNet, batches: SplitBatches) -> float | None:
    """Cross-entropy over every example of a split, on the model's device, summed in float32 whatever the training
    precision (None for a split without examples)."""
    model.eval()
    device = model.embedding.device
    total, count = 0.0, 0
    for x, y in batches:
        logits = model(x.to(device)).float()
        total += float(cross_entropy(logits, y.to(device), reduction="sum"))
        count += int(predictions(y))
    return total / count if count else None


def unseen_metrics(model: LayerNet, datamodule: NamesDataModule) -> dict[str, float | int | None]:
    """val/loss_unseen and test/loss_unseen (the split's words that are not training words), and the word counts."""
    metrics: dict[str, float | int | None] = {}
    for name in UNSEEN_SPLITS:
        metrics[f"{name}/loss_unseen"] = split_loss(model, datamodule.split_batches(f"{name}_unseen"))
        metrics[f"{name}/words"] = len(datamodule.words[name])
        metrics[f"{name}/words_unseen"] = len(datamodule.words[f"{name}_unseen"])
    return metrics


def split_metrics(model: LayerNet, datamodule: NamesDataModule) -> dict[str, float | int | None]:
    """train/loss, val/loss, test/loss and the unseen losses with their counts, all by split_loss."""
    losses = {f"{name}/loss": split_loss(model, datamodule.split_batches(name)) for name in ("train", "val", "test")}
    return {**losses, **unseen_metrics(model, datamodule)}


USAGE = """usage: python eval.py ckpt_path=PATH [data.path=FILE] [threads=1]

  ckpt_path=PATH    the checkpoint (default: the newest checkpoints/best.ckpt under ./outputs, ./multirun)
  data.path=FILE    score every word of FILE instead of the checkpoint's own train/val/test split
  threads=1         torch threads

Prints a table on stderr and one JSON object on stdout: metrics.json's keys (train/loss, val/loss, test/loss,
val/loss_unseen, test/loss_unseen, the word counts), or for data.path: loss, words, loss_unseen (the file's words
that are not training words), words_unseen. Losses are nats per character, the end token included, exact over
every word. Bad input prints one line on stderr and exits with code 2."""


def evaluate_checkpoint(ckpt: str, data_path: str | None = None) -> dict[str, Any]:
    """The checkpoint's exact losses: on its own split (the numbers of its run's metrics.json for best.ckpt), or
    on every word of `data_path`."""
    trained = load_trained(ckpt)  # read without torch's unpickler: a broken or hostile file is one CharmlpError
    net = build_network(trained.model)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in trained.net.state.items()}, strict=True)
    mode = "words" if trained.net.sequence else "windows"  # as the checkpoint's family trains
    datamodule = NamesDataModule(path=data_path or "", block_size=trained.net.block_size, mode=mode)
    if data_path is None:
        if not all(trained.words.get(name) for name in ("train", "val", "test")):
            raise CharmlpError(f"{ckpt} does not record its split's words; give data.path=FILE to score a word file")
        datamodule.use_split(trained.vocab, trained.words)
        return split_metrics(net, datamodule)
    words = read_words(data_path)
    longest = max(len(w) for w in words)
    if trained.net.sequence and longest >= trained.net.block_size:
        raise CharmlpError(
            f"{data_path}: its longest word has {longest} characters, and this model reads words of at most "
            f"{trained.net.block_size - 1} at once; score it with sample.py score_file={data_path} (longer words read "
            "as generation reads them), or leave those words out"
        )
    try:
        datamodule.use_split(trained.vocab, {"train": trained.words.get("train", []), "val": words, "test": []})
    except CharmlpError as err:
        raise CharmlpError(f"{data_path}: {err} the checkpoint was trained on; score a file of its letters") from None
    unseen = unseen_metrics(net, datamodule)
    return {
        "path": str(data_path),
        "loss": split_loss(net, datamodule.split_batches("val")),
        "words": unseen["val/words"],
        "loss_unseen": unseen["val/loss_unseen"],
        "words_unseen": unseen["val/words_unseen"],
    }


def table(metrics: dict[str, Any]) -> str:
    """The losses as eval.py prints them on stderr (the JSON on stdout has every digit)."""
    show = lambda v: f"{v:>7.4f}" if isinstance(v, float) else f"{'-':>7}"  # noqa: E731
    if "path" in metrics:
        return (
            f"{'words':<8} {'loss':>7}  {metrics['path']}\n{'all':<8} {show(metrics['loss'])}  ({metrics['words']:,})\n"
            f"{'unseen':<8} {show(metrics['loss_unseen'])}  ({metrics['words_unseen']:,} not training words)"
        )
    lines = [f"{'split':<6} {'loss':>7}  {'unseen':>7}  (words not in train)"]
    lines.append(f"{'train':<6} {show(metrics['train/loss'])}")
    for name in UNSEEN_SPLITS:
        counts = f"({metrics[f'{name}/words_unseen']:,} of {metrics[f'{name}/words']:,} words)"
        lines.append(f"{name:<6} {show(metrics[f'{name}/loss'])}  {show(metrics[f'{name}/loss_unseen'])}  {counts}")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """eval.py: key=value arguments; the table on stderr, the JSON on stdout; user errors in one line, exit 2."""
    if any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = {"ckpt_path": None, "data.path": None, "threads": "1"}
        for arg in argv:
            key, sep, value = arg.partition("=")
            if not sep or key.lstrip("+") not in args:
                raise CharmlpError(f"unknown argument {arg!r}; see python eval.py --help")
            args[key.lstrip("+")] = value or None
        if not (args["threads"] or "").isdigit() or int(args["threads"]) < 1:
            raise CharmlpError(f"threads must be a positive integer, got {args['threads']!r}")
        ckpt = args["ckpt_path"] or newest_checkpoint("best.ckpt")
        if ckpt is None:
            raise CharmlpError("no ckpt_path= given and no checkpoints/best.ckpt under ./outputs or ./multirun")
        if Path(ckpt).is_dir():
            raise CharmlpError(f"ckpt_path={ckpt} is a directory; give a file, e.g. {ckpt}/checkpoints/best.ckpt")
        if args["data.path"] is not None and not Path(args["data.path"]).is_file():
            raise CharmlpError(f"data.path={args['data.path']}: no such file; give a word file, one word a line")
        torch.set_num_threads(int(args["threads"]))
        metrics = evaluate_checkpoint(str(ckpt), args["data.path"])
    except CharmlpError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(table(metrics), file=sys.stderr)
    print(json.dumps(metrics))
    return 0
