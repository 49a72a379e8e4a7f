"""The data: word files, the vocabulary, the split and the context windows, as plain Python and torch tensors.

May import charmlp.errors and torch (windows, batches); never Lightning or Hydra (the LightningDataModule is
training's)."""
