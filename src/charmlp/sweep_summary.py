"""A Hydra callback that leaves summary.csv (and prints a markdown table) in every multirun's directory."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("charmlp")
LOSSES = ("train/loss", "val/loss", "test/loss")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory: its overrides and final losses, sorted by val/loss (failed jobs last)."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        row: dict[str, Any] = {"job": job_dir.name, "overrides": " ".join(OmegaConf.load(overrides_file))}
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {"error": "no metrics.json"}
        row.update({k: metrics.get(k, "") for k in LOSSES})
        row["pruned_at"] = metrics.get("pruned_at", "")
        row["status"] = status(metrics)
        rows.append(row)
    # finished runs by val/loss, then pruned ones (val/loss so far), then failed ones
    rank = {"ok": 0, "pruned": 1}
    rows.sort(key=lambda r: (rank.get(r["status"].split()[0], 2), _number(r["val/loss"])))
    return rows


def status(metrics: dict[str, Any]) -> str:
    """ok, pruned at update N (a sweep's pruner stopped it), or failed: why."""
    if "error" in metrics:
        return "failed: " + metrics["error"]
    if "pruned_at" in metrics:
        return f"pruned at update {metrics['pruned_at']}"
    return "ok"


def _number(value: Any) -> float:
    return value if isinstance(value, float) else math.inf


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["job", "overrides", *LOSSES, "status"]  # pruned_at is in the status
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


class SweepSummary(Callback):
    """on_multirun_end: summary.csv in the sweep directory, and the table on stderr."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect(sweep_dir)
        if not rows:
            return
        with open(sweep_dir / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        failed = sum(r["status"].startswith("failed") for r in rows)
        pruned = sum(r["status"].startswith("pruned") for r in rows)
        counts = [f"{n} of {len(rows)} jobs {what}" for n, what in ((pruned, "pruned"), (failed, "failed")) if n]
        tail = "".join(f"\n{c}" for c in counts)
        log.info("sweep summary (%s):\n%s%s", sweep_dir / "summary.csv", markdown(rows), tail)
