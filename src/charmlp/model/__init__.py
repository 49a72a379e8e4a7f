"""The models: the torch-free layer library (each layer's math once, for torch and numpy), the family registry,
and the torch networks built from it (with the lecture's hand-written step).

May import charmlp.errors, and torch in the network modules; never Lightning, Hydra or data."""
