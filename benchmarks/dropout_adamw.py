"""One update of experiment=best_mlp's model (dropout + AdamW, autograd): torch's own pieces against charmlp's.

torch's CPU dropout draws one Mersenne Twister number per element and the foreach AdamW step runs a few
kernels per parameter; charmlp cuts the dropout mask from 64-bit draws and uses fused AdamW.

usage: python benchmarks/dropout_adamw.py [--threads 2] [--batch 256] [--updates 300] [--rounds 3]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from charmlp.model import torch_ops
from charmlp.model.lecture import LectureMLP


def updates_per_second(fast: bool, batch: int, updates: int) -> float:
    torch.manual_seed(0)
    model = LectureMLP(27, block_size=10, emb_dim=32, hidden_dim=1024, dropout=0.3, init="scaled")
    kind = {"fused": True} if fast else {"foreach": True}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, **kind)
    x, y = torch.randint(0, 27, (batch, 10)), torch.randint(0, 27, (batch,))
    original = torch_ops.dropout_mask
    if not fast:  # the mask torch's own CPU dropout draws, one Mersenne Twister number per element
        torch_ops.dropout_mask = lambda h, p: F.dropout(torch.ones_like(h), p)
    try:
        for i in range(updates + 20):  # the first 20 warm up
            if i == 20:
                start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        torch_ops.dropout_mask = original
    return updates / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for r in range(args.rounds):  # alternate the order: the machine's speed drifts
        order = (False, True) if r % 2 == 0 else (True, False)
        speeds = {fast: updates_per_second(fast, args.batch, args.updates) for fast in order}
        print(
            f"round {r + 1}: F.dropout + foreach AdamW {speeds[False]:.1f} upd/s, "
            f"charmlp dropout + fused AdamW {speeds[True]:.1f} upd/s, {speeds[True] / speeds[False]:.2f}x"
        )


if __name__ == "__main__":
    main()
