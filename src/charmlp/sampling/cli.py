"""sample.py's logic: parse key=value arguments, load a checkpoint, sample or score, print data."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from charmlp.data.words import read_words
from charmlp.errors import CharmlpError
from charmlp.rundir.checkpoints import newest_checkpoint
from charmlp.sampling.checkpoint import TrainedModel, load_trained
from charmlp.sampling.generate import Sample, generate, score

MAX_ROUNDS = 50  # batches drawn before unique/novel sampling gives up
MAX_N = 1_000_000  # names a run; more is a run per seed
MAX_LEN = 10_000  # characters a name


@dataclass
class Options:
    ckpt: str | None = None
    n: int = 10
    seed: int = 0
    temperature: float = 1.0
    top_k: int | None = None
    max_len: int = 50
    prefix: str = ""
    unique: bool = False
    novel: bool = False
    report: bool = False
    score: list[str] = field(default_factory=list)
    score_file: str | None = None
    format: str = "text"


def parse_args(args: Sequence[str]) -> Options:
    """Hydra-style key=value arguments, checked against Options' fields and types."""
    options = Options()
    types = {f.name: f.type for f in fields(Options)}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or key not in types:
            raise CharmlpError(f"unknown argument {arg!r}; see python sample.py --help")
        setattr(options, key, _convert(key, value, types[key]))
    if options.n < 1:
        raise CharmlpError(f"n must be at least 1, got {options.n}")
    if options.n > MAX_N:
        raise CharmlpError(
            f"n={options.n} is too many: at most {MAX_N:,} names a run; ask for fewer, and for more names run again "
            "with another seed="
        )
    if options.seed < 0:
        raise CharmlpError(f"seed must be >= 0, got {options.seed}; give seed=0 or another non-negative integer")
    if options.max_len > MAX_LEN:
        raise CharmlpError(f"max_len={options.max_len} is too long: at most {MAX_LEN:,} characters; give a smaller one")
    if not math.isfinite(options.temperature) or options.temperature < 0:
        raise CharmlpError(
            f"temperature must be a finite number >= 0, got {options.temperature}; "
            "e.g. temperature=1.0 (the model as trained), or temperature=0 for greedy decoding"
        )
    if options.top_k is not None and options.top_k < 1:
        raise CharmlpError(f"top_k must be at least 1, got {options.top_k}; or top_k=null for every character")
    if options.temperature == 0 and options.unique and options.n > 1:
        raise CharmlpError(
            f"unique=true with temperature=0 asks for n={options.n} distinct names, but greedy decoding gives "
            "exactly 1 name per prefix; ask for n=1, or sample with temperature>0"
        )
    if options.format not in ("text", "json", "csv"):
        raise CharmlpError(f"format must be text, json or csv, got {options.format!r}")
    return options


def _convert(key: str, value: str, kind: str) -> object:
    if value in ("null", "None", "") and "None" in kind:
        return None
    try:
        if kind.startswith("int"):
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if kind.startswith("list"):
            inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            return [w.strip() for w in inner.split(",") if w.strip()]
    except ValueError:
        raise CharmlpError(f"{key}={value!r} is not a valid {kind.split(' ')[0]}") from None
    return value


def main(argv: Sequence[str], doc: str = "") -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(doc.strip())
        return 0
    try:
        options = parse_args(argv)
        ckpt = resolve_ckpt(options.ckpt) if options.ckpt else newest_checkpoint("best.ckpt")
        if ckpt is None:
            raise CharmlpError("no ckpt= given and no checkpoints/best.ckpt under ./outputs or ./multirun")
        trained = load_trained(ckpt)
        if options.score or options.score_file:
            run_score(trained, options)
        else:
            run_sample(trained, options)
    except CharmlpError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # e.g. | head
        return 0
    except MemoryError:  # a safety net: the bounds on n and max_len keep a sane model well inside memory
        print(
            "error: out of memory; ask for fewer names (n=) or shorter ones (max_len=), or free some memory",
            file=sys.stderr,
        )
        return 2
    return 0


def resolve_ckpt(given: str) -> Path:
    """ckpt= as given; for a run directory, its checkpoints/best.ckpt (or a best.ckpt in it), used silently."""
    path = Path(given)
    if not path.is_dir():
        return path
    for candidate in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):
        if candidate.is_file():
            return candidate
    found = sorted((path / "checkpoints").glob("*.ckpt")) + sorted(path.glob("*.ckpt"))
    example = found[0] if found else path / "checkpoints" / "best.ckpt"
    raise CharmlpError(
        f"ckpt={given} is a directory with no best.ckpt in it or in its checkpoints/; give a checkpoint file, "
        f"e.g. ckpt={example}"
    )


def run_sample(trained: TrainedModel, options: Options) -> None:
    rng = np.random.default_rng(options.seed)
    train_words = set(trained.words.get("train", []))
    if options.novel and not train_words:
        raise CharmlpError(f"{trained.path} does not record its training words, so novel=true cannot work")
    samples: list[Sample] = []
    seen: set[str] = set()
    if options.temperature == 0:  # greedy: one name per prefix, n times (parse_args refuses unique with n > 1)
        samples = generate(
            trained.net,
            trained.vocab,
            options.n,
            rng,
            temperature=0,
            top_k=options.top_k,  # checked, then ignored: the likeliest character is among any k likeliest
            max_len=options.max_len,
            prefix=options.prefix,
        )
        if options.novel and samples[0].name in train_words:
            raise CharmlpError(
                f"novel=true with temperature=0: greedy decoding gives exactly 1 name for prefix={options.prefix!r}, "
                f"{samples[0].name!r}, and it is a training word; sample with temperature>0, or try another prefix"
            )
    for attempt in range(MAX_ROUNDS if options.temperature > 0 else 0):
        batch = generate(
            trained.net,
            trained.vocab,
            options.n if attempt == 0 and not (options.unique or options.novel) else max(options.n - len(samples), 16),
            rng,
            temperature=options.temperature,
            top_k=options.top_k,
            max_len=options.max_len,
            prefix=options.prefix,
        )
        for s in batch:
            # an empty name (the end token first: a barely trained model draws it) is no name: drawn again
            if not s.name or options.novel and s.name in train_words or options.unique and s.name in seen:
                continue
            seen.add(s.name)
            samples.append(s)
        if len(samples) >= options.n:
            break
    if len(samples) < options.n:
        wanted = (("non-empty", True), ("distinct", options.unique), ("new", options.novel))
        raise CharmlpError(
            f"found only {len(samples)} of {options.n} names that are "
            f"{' and '.join(w for w, on in wanted if on)}; "
            "ask for fewer, or raise temperature"
        )
    samples = samples[: options.n]
    print_samples(samples, options.format)
    if options.report:
        print_report(samples, trained)


def print_samples(samples: list[Sample], fmt: str) -> None:
    if fmt == "json":
        json.dump(
            [{"name": s.name, "logprob": round(s.logprob, 6), "finished": s.finished} for s in samples],
            sys.stdout,
            ensure_ascii=False,
        )
        print()
    elif fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["name", "logprob", "finished"])
        out.writerows([s.name, f"{s.logprob:.6f}", s.finished] for s in samples)
    else:
        sys.stdout.write("".join(s.name + "\n" for s in samples))


def print_report(samples: list[Sample], trained: TrainedModel) -> None:
    """makemore's split of samples: in the training words, in the held-out words, or new."""
    train = set(trained.words.get("train", []))
    heldout = set(trained.words.get("val", [])) | set(trained.words.get("test", []))
    in_train = sum(s.name in train for s in samples)
    in_heldout = sum(s.name in heldout and s.name not in train for s in samples)
    new = len(samples) - in_train - in_heldout
    shares = {"in_train": in_train, "in_heldout": in_heldout, "new": new}
    line = ", ".join(f"{k} {v} ({v / len(samples):.1%})" for k, v in shares.items())
    print(f"report: {len(samples)} samples: {line}", file=sys.stderr)


def run_score(trained: TrainedModel, options: Options) -> None:
    words = list(options.score)
    if options.score_file:
        words += read_score_file(options.score_file)
    if not words:
        raise CharmlpError("nothing to score: give score=[word,...] or score_file=FILE with words in it")
    results = score(trained.net, trained.vocab, words)
    if options.format == "json":
        json.dump(
            [{"word": w, "nll_per_char": nll / k, "nll": nll, "predictions": k} for w, (nll, k) in zip(words, results)],
            sys.stdout,
            ensure_ascii=False,
        )
        print()
    elif options.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(["word", "nll_per_char", "nll", "predictions"])
        out.writerows([w, f"{nll / k:.6f}", f"{nll:.6f}", k] for w, (nll, k) in zip(words, results))
    else:
        sys.stdout.write("".join(f"{w}\t{nll / k:.4f}\n" for w, (nll, k) in zip(words, results)))
    total, count = sum(r[0] for r in results), sum(r[1] for r in results)
    print(
        f"mean nll per character: {total / count:.6f} over {len(words)} words ({count} predictions, "
        "the end token included)",
        file=sys.stderr,
    )


def read_score_file(given: str) -> list[str]:
    """read_words, its errors naming score_file= (its own name data.path= is train.py's)."""
    path = Path(given)
    advice = "give a word file, one word a line"
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise CharmlpError(f"score_file={given}: no such file; {advice}") from None
    except IsADirectoryError:
        raise CharmlpError(f"score_file={given} is a directory; {advice}") from None
    except OSError as err:
        raise CharmlpError(f"score_file={given} cannot be read ({err.strerror}); {advice}") from None
    try:
        return read_words(path)
    except CharmlpError as err:  # the file's contents: words.py names it "data file PATH" or "PATH:LINE"
        message = str(err)
        for old, new in ((f"data file {path} ", f"score_file={given} "), (f"{path}:", f"score_file={given}:")):
            if message.startswith(old):
                message = new + message[len(old) :]
                break
        if "reserved as the start/end token" in message:
            message += " (a name ends there); remove it from the word"
        raise CharmlpError(message) from None
