"""What the TensorBoard diagnostics cost: the lecture's recipe with them at the default interval and off, side by
side (one thread, the same machine, alternating, best of `--repeats`).

usage: python benchmarks/diagnostics_overhead.py [--updates 200000] [--repeats 2] [--experiment lecture]
Prints one JSON line: training seconds (metrics.json's `seconds`) and whole-process seconds of each, and the
ratios on/off. The issue's bar: at most 1.05 for training time at the default interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_run(run_dir: Path, updates: int, experiment: str, every: str | None) -> tuple[float, float]:
    args = [f"experiment={experiment}", "threads=1", f"trainer.max_steps={updates}", f"hydra.run.dir={run_dir}"]
    args += [f"diagnostics.every={every}"] if every is not None else []  # None: the default interval
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *args], check=True, capture_output=True)
    whole = time.perf_counter() - started
    return json.loads((run_dir / "metrics.json").read_text())["seconds"], whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--experiment", default="lecture")
    args = parser.parse_args()
    best: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, every in (("on", None), ("off", "0")):
                train, whole = one_run(Path(tmp) / f"{name}{i}", args.updates, args.experiment, every)
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], train), min(old[1], whole))
    (on_train, on_whole), (off_train, off_whole) = best["on"], best["off"]
    print(
        json.dumps(
            {
                "experiment": args.experiment,
                "updates": args.updates,
                "train_seconds_on": on_train,
                "train_seconds_off": off_train,
                "train_ratio": round(on_train / off_train, 4),
                "whole_seconds_on": round(on_whole, 2),
                "whole_seconds_off": round(off_whole, 2),
                "whole_ratio": round(on_whole / off_whole, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
