"""charmlp: character-level MLP language models (Bengio et al. 2003) with Lightning and Hydra."""

from charmlp.errors import CharmlpError

__all__ = ["CharmlpError"]
