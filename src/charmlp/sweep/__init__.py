"""Sweeps: charmlp's Optuna sweeper (study store, slot pool, ask/tell, pruning verdicts), search spaces,
study plots and the summaries of finished runs (`python -m charmlp.sweep DIR`).

May import cluster and rundir; it reaches a trial's training only through Hydra's task function and
rundir.trial, never charmlp.training."""
