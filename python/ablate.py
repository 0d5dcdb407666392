"""Run the ZS² ablation study. Same as the ``zs2-ablate`` console script; shard with torchrun."""

import sys

from zs2_kernels.evaluation.cli import ablate_main

if __name__ == "__main__":
    sys.exit(ablate_main())
