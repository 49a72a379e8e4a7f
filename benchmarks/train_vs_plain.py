"""charmlp's training against the seed's plain loop: same data, same updates, same threads, side by side.

usage: python benchmarks/train_vs_plain.py [--steps 200000] [--rounds 1]
Each round runs both as whole processes, one after the other (alternating which goes first), and prints
updates/s of each training loop, the whole-process seconds of each, and the ratios (charmlp / plain).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    plain_cmd = [sys.executable, "benchmarks/plain_loop.py", "--steps", str(args.steps), "--threads", "1"]
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as run_dir:
            train_cmd = [
                sys.executable,
                "train.py",
                f"trainer.max_steps={args.steps}",
                "threads=1",
                f"scheduler.milestones=[{args.steps // 2}]",
                f"hydra.run.dir={run_dir}",
            ]
            order = [("plain", plain_cmd), ("charmlp", train_cmd)][:: 1 if r % 2 == 0 else -1]
            results = {}
            for name, cmd in order:
                seconds, out = timed(cmd)
                if name == "plain":
                    loop = json.loads(out)
                    results[name] = (seconds, loop["updates_per_s"], loop["dev"])
                else:
                    m = json.loads((Path(run_dir) / "metrics.json").read_text())
                    results[name] = (seconds, m["updates_per_second"], m["val/loss"])
        (ps, pu, pv), (cs, cu, cv) = results["plain"], results["charmlp"]
        print(
            f"round {r + 1}: {args.steps} updates  plain {pu:.0f} upd/s, {ps:.1f} s whole (val {pv:.4f})  "
            f"charmlp {cu:.0f} upd/s, {cs:.1f} s whole (val {cv:.4f})  "
            f"throughput x{cu / pu:.2f}, whole-process time x{cs / ps:.2f}"
        )


if __name__ == "__main__":
    main()
