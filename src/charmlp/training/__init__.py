"""Training: run(cfg) and the Hydra job around it, the LightningModule and its update strategies, the
LightningDataModule, callbacks, diagnostics, lr_find, plots, checkpoint writing, resume and evaluation.

May import every package below it (data, model, sampling, cluster, rundir); nothing below imports it."""
