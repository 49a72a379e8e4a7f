"""Summarise finished runs: python -m charmlp.sweep DIR [DIR ...] [--csv].

Each DIR is a run directory (with metrics.json) or a folder searched for run directories (a sweep directory,
outputs/, ...). Prints, as markdown on stdout, one row per run (as a sweep's summary.csv) and the runs grouped by
configuration (their .hydra/overrides.yaml without seed=, ckpt_path=, threads=, hydra.* and paths.*) with the mean
and standard deviation of each loss over the finished runs of each group; --csv prints that grouped table as CSV.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from charmlp.errors import CharmlpError
from charmlp.rundir import record
from charmlp.sweep.summary import Run, markdown, read_run, rows, seed_groups, seeds_markdown


def find_runs(paths: list[Path]) -> list[Run]:
    """The run directories named or found under `paths` (each once), named by their path as given."""
    found: dict[Path, Path] = {}
    for path in paths:
        if not path.exists():
            raise CharmlpError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise CharmlpError(f"{path}: not a directory (give a run directory or a folder of runs)")
        found_here = (path / record.FILE).is_file()
        run_dirs = [path] if found_here else sorted(m.parent for m in path.rglob(record.FILE))
        if not run_dirs:
            raise CharmlpError(f"{path}: no run directory (a folder with metrics.json) in it")
        for run_dir in run_dirs:
            found.setdefault(run_dir.resolve(), run_dir)
    return [read_run(run_dir, str(run_dir)) for run_dir in found.values()]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, as every charmlp entry point says a mistake
        raise CharmlpError(f"{message} (usage: python -m charmlp.sweep DIR [DIR ...] [--csv])")


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m charmlp.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="a run directory or a folder of runs")
    parser.add_argument("--csv", action="store_true", help="the table grouped by configuration as CSV")
    try:
        args = parser.parse_args(argv)
        runs = find_runs(args.dirs)
    except CharmlpError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    groups = seed_groups(runs)
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(groups[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(groups)
        return
    print(f"## Runs\n\n{markdown(rows(runs))}\n")
    print(f"## Over the seeds (finished runs that differ only in seed)\n\n{seeds_markdown(groups)}")


if __name__ == "__main__":
    main()
