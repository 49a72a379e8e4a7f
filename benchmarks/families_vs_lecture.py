"""The lecture's own plain loops for part 3's batch-norm MLP and part 5's WaveNet against `train.py` on the
same experiment: updates per second, one thread, side by side.

usage: python benchmarks/families_vs_lecture.py [--updates 5000] [--threads 1] [--data data/names.txt]
Prints one JSON line per model: {"model", "lecture_updates_per_second", "charmlp_updates_per_second"}.
The lecture loops are the notebooks' code (makemore_part3_bn.ipynb, makemore_part5_cnn1.ipynb), trimmed to
the training loop; charmlp's figure is train.py's own `updates_per_second` (its loop alone, no evaluation).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def windows(words: list[str], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    stoi = {s: i + 1 for i, s in enumerate(sorted(set("".join(words))))} | {".": 0}
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            X.append(context)
            Y.append(stoi[ch])
            context = context[1:] + [stoi[ch]]
    return torch.tensor(X), torch.tensor(Y)


def part3_bn(Xtr: torch.Tensor, Ytr: torch.Tensor, steps: int) -> float:
    """makemore part 3, "batch norm in training": C, W1 (no b1), bngain/bnbias, running mean/std, W2, b2."""
    g = torch.Generator().manual_seed(2147483647)
    n_embd, n_hidden, vocab_size, block_size = 10, 200, 27, 3
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5 / 3) / ((n_embd * block_size) ** 0.5)
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
    b2 = torch.randn(vocab_size, generator=g) * 0
    bngain, bnbias = torch.ones((1, n_hidden)), torch.zeros((1, n_hidden))
    bnmean_running, bnstd_running = torch.zeros((1, n_hidden)), torch.ones((1, n_hidden))
    parameters = [C, W1, W2, b2, bngain, bnbias]
    for p in parameters:
        p.requires_grad = True
    start = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmeani = hpreact.mean(0, keepdim=True)
        bnstdi = hpreact.std(0, keepdim=True)
        hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
        with torch.no_grad():
            bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
            bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 100000 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
    return steps / (time.perf_counter() - start)


class Linear:
    def __init__(self, fan_in, fan_out, bias=True):
        self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5
        self.bias = torch.zeros(fan_out) if bias else None

    def __call__(self, x):
        self.out = x @ self.weight
        if self.bias is not None:
            self.out += self.bias
        return self.out

    def parameters(self):
        return [self.weight] + ([] if self.bias is None else [self.bias])


class BatchNorm1d:
    def __init__(self, dim, eps=1e-5, momentum=0.1):
        self.eps, self.momentum, self.training = eps, momentum, True
        self.gamma, self.beta = torch.ones(dim), torch.zeros(dim)
        self.running_mean, self.running_var = torch.zeros(dim), torch.ones(dim)

    def __call__(self, x):
        if self.training:
            dim = 0 if x.ndim == 2 else (0, 1)
            xmean = x.mean(dim, keepdim=True)
            xvar = x.var(dim, keepdim=True)
        else:
            xmean, xvar = self.running_mean, self.running_var
        xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
        self.out = self.gamma * xhat + self.beta
        if self.training:
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
        return self.out

    def parameters(self):
        return [self.gamma, self.beta]


class Tanh:
    def __call__(self, x):
        self.out = torch.tanh(x)
        return self.out

    def parameters(self):
        return []


class Embedding:
    def __init__(self, num_embeddings, embedding_dim):
        self.weight = torch.randn((num_embeddings, embedding_dim))

    def __call__(self, IX):
        self.out = self.weight[IX]
        return self.out

    def parameters(self):
        return [self.weight]


class FlattenConsecutive:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        B, T, C = x.shape
        x = x.view(B, T // self.n, C * self.n)
        if x.shape[1] == 1:
            x = x.squeeze(1)
        self.out = x
        return self.out

    def parameters(self):
        return []


class Sequential:
    def __init__(self, layers):
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        self.out = x
        return self.out

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]


def part5_wavenet(Xtr: torch.Tensor, Ytr: torch.Tensor, steps: int) -> float:
    """makemore part 5's final model: 76,579 parameters, batch 32, lr 0.1 then 0.01 from update 150,000."""
    torch.manual_seed(42)
    n_embd, n_hidden, vocab_size = 24, 128, 27
    layers = [Embedding(vocab_size, n_embd)]
    for fan_in in (n_embd * 2, n_hidden * 2, n_hidden * 2):
        layers += [FlattenConsecutive(2), Linear(fan_in, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh()]
    model = Sequential([*layers, Linear(n_hidden, vocab_size)])
    with torch.no_grad():
        model.layers[-1].weight *= 0.1
    parameters = model.parameters()
    for p in parameters:
        p.requires_grad = True
    start = time.perf_counter()
    for i in range(steps):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        Xb, Yb = Xtr[ix], Ytr[ix]
        logits = model(Xb)
        loss = F.cross_entropy(logits, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 150000 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
    return steps / (time.perf_counter() - start)


def charmlp_speed(experiment: str, updates: int, threads: int, data: str) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run(
            [sys.executable, "train.py", f"experiment={experiment}", f"trainer.max_steps={updates}",
             f"threads={threads}", f"data.path={data}", f"hydra.run.dir={run_dir}", "~logger"],
            check=True, capture_output=True,
        )  # fmt: skip
        return json.loads((Path(run_dir) / "metrics.json").read_text())["updates_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/names.txt")
    ap.add_argument("--updates", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    words = Path(args.data).read_text().splitlines()
    random.seed(42)
    random.shuffle(words)
    train = words[: int(0.8 * len(words))]
    for name, experiment, block_size, loop in (
        ("bn_mlp", "lecture_bn", 3, part3_bn),
        ("wavenet", "lecture_wavenet", 8, part5_wavenet),
    ):
        Xtr, Ytr = windows(train, block_size)
        lecture = loop(Xtr, Ytr, args.updates)
        ours = charmlp_speed(experiment, args.updates, args.threads, args.data)
        print(json.dumps({"model": name, "lecture_updates_per_second": round(lecture, 1),
                          "charmlp_updates_per_second": ours}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
