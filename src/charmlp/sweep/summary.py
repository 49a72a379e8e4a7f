"""Summaries of runs: a Hydra callback that leaves summary.csv (and summary_seeds.csv) in every multirun's directory
and prints them as markdown tables, and the rows and seed groups that `python -m charmlp.sweep` prints for any
run directories."""

from __future__ import annotations

import csv
import logging
import math
import statistics
from collections.abc import Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from charmlp.errors import CharmlpError
from charmlp.rundir import record

log = logging.getLogger("charmlp")
LOSSES = ("train/loss", "val/loss", "test/loss")
UNSEEN = ("val/loss_unseen", "test/loss_unseen")  # each split's loss on its words not in train; older runs lack them
SEED_LOSSES = ("val/loss", "test/loss", *UNSEEN)  # averaged over the seeds of one configuration
# overrides that do not make another configuration: the seed, where files go, how many threads, what to resume
NOT_CONFIG = ("seed", "ckpt_path", "threads", "hydra", "paths")


@dataclass
class Run:
    """One run directory as the summaries see it: its name, its command-line overrides and its metrics.json."""

    name: str
    overrides: list[str]
    metrics: dict[str, Any]


def read_run(run_dir: Path, name: str) -> Run:
    """A run directory's .hydra/overrides.yaml (none: no overrides) and metrics.json (none: a failed row)."""
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    try:
        overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    except Exception as err:  # a YAML error, or not a list
        raise CharmlpError(f"{overrides_file}: not a list of overrides ({type(err).__name__})") from None
    return Run(name, overrides, record.read(run_dir))


def sweep_runs(sweep_dir: Path) -> list[Run]:
    """The job directories of a sweep directory (each with its .hydra/overrides.yaml), named as their folders."""
    return [read_run(f.parent.parent, f.parent.parent.name) for f in sorted(sweep_dir.glob("*/.hydra/overrides.yaml"))]


def rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per run: its overrides and final losses, sorted by val/loss (finished, then pruned, then failed)."""
    table = []
    for run in runs:
        row: dict[str, Any] = {"job": run.name, "overrides": " ".join(run.overrides)}
        row.update({k: run.metrics.get(k, "") for k in (*LOSSES, *UNSEEN)})
        row["pruned_at"] = run.metrics.get("pruned_at", "")
        row["status"] = status(run.metrics)
        table.append(row)
    rank = {"ok": 0, "pruned": 1}
    table.sort(key=lambda r: (rank.get(r["status"].split()[0], 2), _number(r["val/loss"])))
    return table


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """summary.csv's rows: one per job directory of the sweep."""
    return rows(sweep_runs(sweep_dir))


def status(metrics: dict[str, Any]) -> str:
    """ok, pruned at update N (a sweep's pruner stopped it), or failed: why."""
    if "error" in metrics:
        return "failed: " + str(metrics["error"])
    if "pruned_at" in metrics:
        return f"pruned at update {metrics['pruned_at']}"
    return "ok"


def configuration(overrides: Sequence[str]) -> str:
    """The overrides that make a run's configuration, sorted: without seed=, ckpt_path=, threads=, hydra.* and
    paths.* (runs that differ only in those are repeats of one configuration)."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    kept = [o for o in overrides if not any(key(o) == k or key(o).startswith((f"{k}.", f"{k}/")) for k in NOT_CONFIG)]
    return " ".join(sorted(kept))


def seed_groups(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Runs grouped by configuration (`configuration`): n finished (ok) runs and, over them, the mean and the
    sample standard deviation (n - 1; empty for one run) of each loss in SEED_LOSSES. A loss some runs lack (older
    runs have no unseen losses) is averaged over the runs that have it. Sorted by mean val/loss."""
    by_config: dict[str, list[Run]] = {}
    for run in runs:
        by_config.setdefault(configuration(run.overrides), []).append(run)
    groups = []
    for config, members in by_config.items():
        ok = [r for r in members if status(r.metrics) == "ok"]
        group: dict[str, Any] = {"config": config or "(defaults)", "n": len(ok), "runs": len(members)}
        for key in SEED_LOSSES:
            values = [float(r.metrics[key]) for r in ok if isinstance(r.metrics.get(key), (int, float))]
            group[f"{key} mean"] = statistics.fmean(values) if values else ""
            group[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else ""
        group["jobs"] = " ".join(r.name for r in members)
        groups.append(group)
    groups.sort(key=lambda g: _number(g["val/loss mean"]))
    return groups


def _number(value: Any) -> float:
    return value if isinstance(value, float) else math.inf


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(head: Sequence[str], table: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(r[h]) for h in head) + " |" for r in table]
    return "\n".join(lines)


def markdown(table: Sequence[dict[str, Any]]) -> str:
    """The rows as a markdown table (pruned_at is in the status; the unseen losses only in the CSV)."""
    return _table(["job", "overrides", *LOSSES, "status"], table)


def seeds_markdown(groups: Sequence[dict[str, Any]]) -> str:
    """The seed groups as a markdown table: n finished runs of `runs`, each loss's mean and std."""
    stats = [f"{key} {what}" for key in SEED_LOSSES for what in ("mean", "std")]
    return _table(["config", "n", "runs", *stats], groups)


def write_csv(path: Path, table: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


class SweepFailed(SystemExit):
    """Jobs of this sweep failed: the process ends with the message on stderr and exit code 1, after summary.csv.

    A SystemExit, not a CharmlpError: Hydra 1.3's Callbacks._notify catches any Exception a callback raises, warns
    and goes on, and the sweep would exit 0; a SystemExit passes through it and through Hydra (callbacks Hydra would
    notify after this one, those listed before it in hydra.callbacks, then miss on_multirun_end)."""


class SweepSummary(Callback):
    """on_multirun_end: summary.csv in the sweep directory and its table on stderr; summary_seeds.csv and its table
    where runs differ only in seed; then exit 1 if a job this invocation ran failed.

    The jobs of this invocation are those whose .hydra/overrides.yaml it wrote (new or rewritten since
    on_multirun_start), or those the Optuna sweeper names (`jobs`): the sweep directory may hold the jobs of earlier
    runs (a continued study) or of another sweep process on the same study. The Optuna sweeper calls this itself with
    the jobs it ran (and `stopped` after Ctrl-C or SIGTERM: it then exits 130 itself); Hydra's call after the sweep
    returns is then skipped."""

    def __init__(self) -> None:
        self._before: dict[str, int] | None = None  # job -> mtime of its overrides.yaml at the start
        self._done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._before, self._done = _stamps(Path(config.hydra.sweep.dir)), False

    def on_multirun_end(
        self, config: DictConfig, jobs: Collection[str] | None = None, stopped: bool = False, **kwargs: Any
    ) -> None:
        if self._done:  # the sweeper has written it already
            return
        self._done = True
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = sweep_runs(sweep_dir)
        if not runs:
            return
        table = rows(runs)
        write_csv(sweep_dir / "summary.csv", table)
        failed = sum(r["status"].startswith("failed") for r in table)
        pruned = sum(r["status"].startswith("pruned") for r in table)
        counts = [f"{n} of {len(table)} jobs {what}" for n, what in ((pruned, "pruned"), (failed, "failed")) if n]
        tail = "".join(f"\n{c}" for c in counts)
        log.info("sweep summary (%s):\n%s%s", sweep_dir / "summary.csv", markdown(table), tail)
        groups = seed_groups(runs)
        if any(g["runs"] > 1 for g in groups):  # else it would be summary.csv again
            write_csv(sweep_dir / "summary_seeds.csv", groups)
            log.info("over the seeds (%s):\n%s", sweep_dir / "summary_seeds.csv", seeds_markdown(groups))
        ours = set(jobs) if jobs is not None else self._rewritten(sweep_dir)
        mine = [r for r in table if r["job"] in ours]
        failed_here = sum(r["status"].startswith("failed") for r in mine)
        if failed_here and not stopped:
            raise SweepFailed(
                f"error: {failed_here} of {len(mine)} jobs of this sweep failed; see {sweep_dir / 'summary.csv'}"
            )

    def _rewritten(self, sweep_dir: Path) -> set[str]:
        before = self._before or {}
        return {job for job, stamp in _stamps(sweep_dir).items() if before.get(job) != stamp}


def _stamps(sweep_dir: Path) -> dict[str, int]:
    """Each job directory's .hydra/overrides.yaml modification time (every job run writes it anew)."""
    stamps = {}
    for f in sweep_dir.glob("*/.hydra/overrides.yaml"):
        with suppress(OSError):  # a job directory removed meanwhile
            stamps[f.parent.parent.name] = f.stat().st_mtime_ns
    return stamps
