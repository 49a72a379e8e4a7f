"""A run directory's shared files and links, torch-free: its checkpoints' paths, metrics.json (the run record)
and the link a sweep trial reports through.

Imports nothing of charmlp but errors: training, sampling, sweeps and the launcher all meet here."""
