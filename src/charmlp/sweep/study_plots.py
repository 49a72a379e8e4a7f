"""Optuna's own plots of a study, as PNGs in the sweep directory (matplotlib: no browser or plotly needed)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("charmlp")
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def save_plots(study: Any, out_dir: Path) -> list[Path]:
    """optimization_history.png, param_importances.png, parallel_coordinate.png, intermediate_values.png: those the
    study has enough trials for (importances need two finished trials that differ, and so on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    saved = []
    for name in PLOTS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" and too-few-trials warnings
            try:
                axes = getattr(optuna_plots, f"plot_{name}")(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                log.info("%s.png not drawn: %s", name, err)
                continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        saved.append(path)
    log.info("Optuna's plots: %s", ", ".join(p.name for p in saved) or "none (too few finished trials)")
    return saved
