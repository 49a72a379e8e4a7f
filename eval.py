#!/usr/bin/env python
"""Evaluate a trained charmlp checkpoint: python eval.py ckpt_path=PATH [data.path=FILE] [threads=1].

The exact train/val/test loss on the checkpoint's own split (with each held-out split's loss on its words that
are not training words), or on every word of a file. A table on stderr, one JSON object on stdout (metrics.json's
keys). Bad input prints one line on stderr and exits with code 2.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # runs from a checkout without install too

from charmlp.training.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
