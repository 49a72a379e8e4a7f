"""Sampling without torch: the checkpoint reader, loading a trained model into numpy, generate/score, the CLI.

May import charmlp.model.layers, charmlp.model.families, charmlp.data's torch-free modules and rundir;
never torch, Lightning or Hydra (sample.py starts in a fraction of a second)."""
