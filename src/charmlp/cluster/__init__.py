"""Many processes and clusters: a run inside a Slurm job (ranks, requeue, resume), DDP child ranks under Hydra,
and the Hydra Slurm launcher that submits and watches jobs.

May import rundir; never training, sweep, model or data (training calls in, not the other way)."""
