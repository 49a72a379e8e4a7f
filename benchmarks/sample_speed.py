"""sample.py's start-up and throughput, whole process: first name, and 10,000 names.

usage: python benchmarks/sample_speed.py CHECKPOINT [--rounds 3]
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ckpt = f"ckpt={Path(args.ckpt).resolve()}"
    seconds(ckpt, "n=1")  # warm the file cache
    one = min(seconds(ckpt, "n=1", "seed=0") for _ in range(args.rounds))
    many = min(seconds(ckpt, "n=10000", "seed=0") for _ in range(args.rounds))
    print(f"sample.py whole process (best of {args.rounds}): 1 name {one:.2f} s, 10,000 names {many:.2f} s")


if __name__ == "__main__":
    main()
