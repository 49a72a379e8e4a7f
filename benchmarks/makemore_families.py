"""makemore.py's five sequence models in plain PyTorch against `train.py experiment=makemore_<family>`:
training updates per second, one torch thread each, side by side.

The plain loops are our own, written from makemore.py's model descriptions (bigram table, causal bag of
words, tanh RNN, GRU, 4-layer transformer; n_embd = n_embd2 = 64), not copied from it. Both sides see the
same words: one per line, shuffled with random.Random(42), the first 80% for training, each word padded to
the longest word + 1 (x = "." + word, y = word + "." with -1 targets ignored), batches of 32 words drawn
with replacement, AdamW(lr 5e-4, weight decay 0.01, betas (0.9, 0.99)). The plain figure times the loop
alone in this process (after 50 warm-up updates, seed 0); charmlp's is train.py's own `updates_per_second`
from metrics.json (its training loop, evaluation excluded). A failing train.py prints its last line and
reports null.

usage: python benchmarks/makemore_families.py [--updates 2000] [--families bigram,bow,rnn,gru,transformer]
                                              [--data data/names.txt] [--rounds 1]
Prints one JSON line per family and round: {"family", "params", "plain_updates_per_second",
"charmlp_updates_per_second", "ratio"} (ratio = charmlp / plain); progress goes to stderr. With --rounds > 1
the order alternates: plain first in odd rounds, charmlp first in even ones.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("bigram", "bow", "rnn", "gru", "transformer")
UPDATES_PER_STEP = 100  # train.py's max_steps counts Lightning steps of this many updates
WARMUP = 50
BATCH = 32
# parameter counts for the bundled names (27 characters, block size 16)
EXPECTED_PARAMS = {"bigram": 729, "bow": 12_827, "rnn": 11_803, "gru": 28_315, "transformer": 204_544}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data


def load_words(path: str) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Training rows (X, Y) of the padded words, vocabulary size and block size."""
    words = [w.strip() for w in Path(path).read_text().splitlines()]
    words = [w for w in words if w]
    chars = sorted(set("".join(words)))
    stoi = {ch: i + 1 for i, ch in enumerate(chars)}
    vocab_size = len(chars) + 1  # id 0 is the boundary "."
    block_size = max(len(w) for w in words) + 1
    random.Random(42).shuffle(words)
    train = words[: int(0.8 * len(words))]
    X = torch.zeros(len(train), block_size, dtype=torch.long)
    Y = torch.full((len(train), block_size), -1, dtype=torch.long)
    for row, w in enumerate(train):
        ids = [stoi[ch] for ch in w]
        X[row, 1 : len(ids) + 1] = torch.tensor(ids, dtype=torch.long)
        Y[row, : len(ids) + 1] = torch.tensor(ids + [0], dtype=torch.long)
    return X, Y, vocab_size, block_size


# ---------------------------------------------------------------- models


class Bigram(nn.Module):
    def __init__(self, vocab_size: int, block_size: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(vocab_size, vocab_size))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.logits[idx]


class CausalAverage(nn.Module):
    """Position t gets the mean of x[0..t]: softmax over a zero matrix with -inf above the diagonal, times x."""

    def __init__(self, block_size: int) -> None:
        super().__init__()
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        weights = torch.zeros(T, T, device=x.device).masked_fill(self.mask[:T, :T] == 0, float("-inf"))
        return F.softmax(weights, dim=-1) @ x


class BoW(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_embd: int = 64, n_embd2: int = 64) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.average = CausalAverage(block_size)
        self.c_fc = nn.Linear(n_embd, n_embd2)
        self.c_proj = nn.Linear(n_embd2, n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        x = x + self.average(x)
        x = x + self.c_proj(torch.tanh(self.c_fc(x)))
        return self.lm_head(x)


class TanhCell(nn.Module):
    def __init__(self, n_embd: int, n_embd2: int) -> None:
        super().__init__()
        self.xh_to_h = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.xh_to_h(torch.cat([xt, h], dim=1)))


class GRUCell(nn.Module):
    def __init__(self, n_embd: int, n_embd2: int) -> None:
        super().__init__()
        self.xh_to_r = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_hbar = nn.Linear(n_embd + n_embd2, n_embd2)
        self.xh_to_z = nn.Linear(n_embd + n_embd2, n_embd2)

    def forward(self, xt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([xt, h], dim=1)
        r = torch.sigmoid(self.xh_to_r(xh))
        hbar = torch.tanh(self.xh_to_hbar(torch.cat([xt, r * h], dim=1)))
        z = torch.sigmoid(self.xh_to_z(xh))
        return (1 - z) * h + z * hbar


class Recurrent(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, cell: str, n_embd: int = 64, n_embd2: int = 64) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(1, n_embd2))
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.cell = TanhCell(n_embd, n_embd2) if cell == "rnn" else GRUCell(n_embd, n_embd2)
        self.lm_head = nn.Linear(n_embd2, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        emb = self.wte(idx)
        h = self.start.expand(idx.shape[0], -1)
        hiddens = []
        for t in range(idx.shape[1]):
            h = self.cell(emb[:, t, :], h)
            hiddens.append(h)
        return self.lm_head(torch.stack(hiddens, dim=1))


class NewGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        y = F.softmax(att, dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), NewGELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_embd: int = 64, n_head: int = 4, n_layer: int = 4) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, block_size) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build(family: str, vocab_size: int, block_size: int) -> nn.Module:
    if family == "bigram":
        return Bigram(vocab_size, block_size)
    if family == "bow":
        return BoW(vocab_size, block_size)
    if family in ("rnn", "gru"):
        return Recurrent(vocab_size, block_size, cell=family)
    return Transformer(vocab_size, block_size)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- the two sides


def plain_speed(family: str, X: torch.Tensor, Y: torch.Tensor, vocab_size: int, block_size: int, updates: int):
    """(parameter count, updates per second of the training loop after WARMUP updates)."""
    torch.manual_seed(0)
    model = build(family, vocab_size, block_size)
    params = count_params(model)
    if (vocab_size, block_size) == (27, 16):
        assert params == EXPECTED_PARAMS[family], (family, params)
        if family == "transformer":
            assert params - model.lm_head.weight.numel() == 202_816, params
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01, betas=(0.9, 0.99), eps=1e-8)
    model.train()

    def update() -> None:
        ix = torch.randint(0, X.shape[0], (BATCH,))
        xb, yb = X[ix], Y[ix]
        logits = model(xb)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), yb.view(-1), ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(WARMUP):
        update()
    start = time.perf_counter()
    for _ in range(updates):
        update()
    return params, updates / (time.perf_counter() - start)


def charmlp_speed(family: str, updates: int, data: Path) -> float | None:
    """train.py's own `updates_per_second` for experiment=makemore_<family>, or None if the run fails."""
    with tempfile.TemporaryDirectory(prefix="makemore_families_") as tmp:
        run_dir = Path(tmp) / family
        log_path = Path(tmp) / f"{family}.log"
        cmd = [
            sys.executable, "train.py", f"experiment=makemore_{family}", "threads=1", f"data.path={data}",
            f"trainer.max_steps={updates}", f"trainer.val_check_interval={updates}", f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
        with log_path.open("w") as out:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        if rc != 0:
            log(f"  charmlp {family}: train.py exited {rc}: {last}")
            return None
        try:
            return float(json.loads((run_dir / "metrics.json").read_text())["updates_per_second"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            log(f"  charmlp {family}: no updates_per_second in metrics.json ({err!r}); last line: {last}")
            return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=2000, help=f"timed updates, a multiple of {UPDATES_PER_STEP}")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--data", default="data/names.txt")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {','.join(FAMILIES)}")
    if args.updates <= 0 or args.updates % UPDATES_PER_STEP:
        ap.error(f"--updates must be a positive multiple of {UPDATES_PER_STEP} (train.py's updates_per_step)")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    torch.set_num_threads(1)
    data = Path(args.data).resolve()
    X, Y, vocab_size, block_size = load_words(str(data))
    log(f"{X.shape[0]} training words, vocab {vocab_size}, block size {block_size}, {args.updates} updates")

    for rnd in range(args.rounds):
        plain_first = rnd % 2 == 0
        for family in families:
            result: dict[str, float | None] = {}
            for side in ("plain", "charmlp") if plain_first else ("charmlp", "plain"):
                log(f"round {rnd + 1}/{args.rounds} {family}: {side} ...")
                if side == "plain":
                    params, result["plain"] = plain_speed(family, X, Y, vocab_size, block_size, args.updates)
                else:
                    result["charmlp"] = charmlp_speed(family, args.updates, data)
            plain, ours = result["plain"], result["charmlp"]
            row = {
                "family": family,
                "params": params,
                "plain_updates_per_second": round(plain, 1),
                "charmlp_updates_per_second": None if ours is None else round(ours, 1),
                "ratio": None if ours is None else round(ours / plain, 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
