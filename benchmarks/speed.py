"""Every speed figure of the README's Speed section, side by side, in one command.

usage: python benchmarks/speed.py [--quick]
Runs, one after the other on one thread each (the machine otherwise idle):
1. the default run (the lecture's MLP, 200,000 updates) as a whole process against the seed's plain loop
   (train_vs_plain.py);
2. part 3's batch-norm MLP and part 5's WaveNet against the lectures' own loops, updates/s
   (families_vs_lecture.py, 20,000 updates);
3. makemore.py's five families against our plain loops of them, updates/s (makemore_families.py, 2,000 updates);
and prints the table (markdown). --quick: a tenth of the updates, for a try.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, *args: str) -> str:
    print(f"running {script} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{script} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    scale = 10 if ap.parse_args().quick else 1
    rows = []
    out = run("train_vs_plain.py", "--steps", str(200_000 // scale))
    line = re.search(r"plain (\d+) upd/s, ([\d.]+) s whole.*charmlp (\d+) upd/s, ([\d.]+) s whole", out)
    if line is None:
        sys.exit(f"train_vs_plain.py printed no result: {out!r}")
    pu, ps, cu, cs = map(float, line.groups())
    rows.append(
        (
            "lecture (MLP), whole process",
            f"{pu:,.0f} upd/s, {ps:.1f} s",
            f"{cu:,.0f} upd/s, {cs:.1f} s",
            f"{cu / pu:.2f}x the updates/s, {cs / ps:.2f}x the time",
        )
    )
    for result in map(json.loads, run("families_vs_lecture.py", "--updates", str(20_000 // scale)).splitlines()):
        lecture, ours = result["lecture_updates_per_second"], result["charmlp_updates_per_second"]
        rows.append(
            (f"{result['model']}, per update", f"{lecture:,.0f} upd/s", f"{ours:,.0f} upd/s", f"{ours / lecture:.2f}x")
        )
    updates = max(100, 2000 // scale // 100 * 100)
    for result in map(json.loads, run("makemore_families.py", "--updates", str(updates)).splitlines()):
        plain, ours = result["plain_updates_per_second"], result["charmlp_updates_per_second"] or float("nan")
        rows.append(
            (
                f"makemore {result['family']}, per update",
                f"{plain:,.0f} upd/s",
                f"{ours:,.0f} upd/s",
                f"{ours / plain:.2f}x",
            )
        )
    print("| model | plain loop | charmlp | charmlp against it |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
