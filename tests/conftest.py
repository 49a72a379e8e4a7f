"""Shared helpers: the repo root, a tiny word list, and a runner for train.py / sample.py as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["trainer.val_check_interval=100", "updates_per_step=50"]  # small runs still validate and checkpoint


def run_script(script: str, *args: str, cwd: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
        env=env,
    )


def compose_cfg(output_dir: Path, *overrides: str):
    """The composed train config, as train.py would see it, writing into output_dir."""
    from hydra import compose, initialize_config_dir

    from charmlp.training.config import register_resolvers

    register_resolvers(ROOT)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def names(tmp_path_factory: pytest.TempPathFactory):
    """2,000 of the bundled names: the real alphabet and word lengths, a fraction of the evaluation time."""
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join((ROOT / "data" / "names.txt").read_text().split()[::16]) + "\n")
    return path


@pytest.fixture
def tiny_words(tmp_path: Path) -> Path:
    path = tmp_path / "words.txt"
    path.write_text("emma\nava\nmia\nzoe\nliam\nnoah\neli\nleo\nkai\nmax\nada\nivy\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short training run on the bundled data, shared by the sampling tests."""
    run_dir = tmp_path_factory.mktemp("run")
    result = run_script("train.py", "trainer.max_steps=3000", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir.parent / "train.stdout").write_text(result.stdout)
    (run_dir.parent / "train.stderr").write_text(result.stderr)
    return run_dir
