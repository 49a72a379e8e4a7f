#!/usr/bin/env python
"""Generate or score names with a trained charmlp checkpoint. Prints only data on stdout.

usage: python sample.py [key=value ...]

  ckpt=PATH         checkpoint to use (default: the newest checkpoints/best.ckpt under ./outputs, ./multirun);
                    a run directory means its checkpoints/best.ckpt (or a best.ckpt in it)
  n=10              how many names, 1 to 1,000,000
  seed=0            random seed, >= 0: the same checkpoint and seed print the same names
  temperature=1.0   <1 plays safe, >1 takes risks; a finite number >= 0. 0 is greedy decoding: always the
                    likeliest next character, whatever the seed (top_k changes nothing), so one name per prefix;
                    its logprob is the model's own (temperature 1)
  top_k=null        draw only among the k likeliest next characters (k >= 1)
  max_len=50        cut names at this length, at most 10,000 (keeps a degenerate model from running forever)
  prefix=           every name starts with these letters, e.g. prefix=ka (never the end token '.')
  unique=false      n distinct names (with temperature=0 only n=1: greedy decoding has one name per prefix)
  novel=false       only names that are not training words (the checkpoint carries them)
  report=false      on stderr: the share of samples that are in train, in val/test, or new
  score=[a,b]       instead of sampling: each word's negative log-likelihood per character (nats); no '.'
  score_file=FILE   the same for every word of a file (one a line); the mean goes to stderr
  format=text       text | json | csv (json and csv carry each name's log-probability)

Bad input prints one line on stderr and exits with code 2. Needs numpy only: no torch import, so it
starts in a fraction of a second.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # runs from a checkout without install too

from charmlp.sampling.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], doc=__doc__))
