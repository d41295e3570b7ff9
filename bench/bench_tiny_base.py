"""The tiny base recipe, one cell: an alias of bench/bench_seed_matrix.py (one bench for the base
recipe, so two cannot disagree).

    . .venv/bin/activate && python bench/bench_tiny_base.py [--seeds 3] [--threads 1] [...]

runs ``bench_seed_matrix.py --seeds 0 --threads 2`` (pretraining seed 0, 2 torch threads) with
any further arguments passed through (a later ``--seeds`` / ``--threads`` wins); see that
script for what is measured and where it is written.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_seed_matrix import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--seeds", "0", "--threads", "2", *sys.argv[1:]]))
