"""The seed's plain PyTorch loop (makemore part 2), kept as the yardstick for charmlp's training speed.

usage: python benchmarks/plain_loop.py [--data data/names.txt] [--steps 200000] [--threads 1]
Prints one JSON line: updates/s of the loop alone and the final train/dev/test loss.
"""

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/names.txt")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with open(args.data) as f:
        words = f.read().splitlines()
    chars = sorted(set("".join(words)))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    block_size = 3

    def build(ws):
        X, Y = [], []
        for w in ws:
            context = [0] * block_size
            for ch in w + ".":
                ix = stoi[ch]
                X.append(context)
                Y.append(ix)
                context = context[1:] + [ix]
        return torch.tensor(X), torch.tensor(Y)

    random.seed(42)
    random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    Xtr, Ytr = build(words[:n1])
    Xdev, Ydev = build(words[n1:n2])
    Xte, Yte = build(words[n2:])

    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((len(stoi), 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, len(stoi)), generator=g)
    b2 = torch.randn(len(stoi), generator=g)
    parameters = [C, W1, b1, W2, b2]
    for p in parameters:
        p.requires_grad = True

    start = time.perf_counter()
    for i in range(args.steps):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        emb = C[Xtr[ix]]
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Ytr[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 100_000 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
    seconds = time.perf_counter() - start

    @torch.no_grad()
    def split_loss(X, Y):
        h = torch.tanh(C[X].view(-1, 30) @ W1 + b1)
        return F.cross_entropy(h @ W2 + b2, Y).item()

    result = {"steps": args.steps, "seconds": round(seconds, 2), "updates_per_s": round(args.steps / seconds, 1)}
    result.update(
        {
            name: round(split_loss(X, Y), 4)
            for name, X, Y in (("train", Xtr, Ytr), ("dev", Xdev, Ydev), ("test", Xte, Yte))
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
