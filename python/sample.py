"""Make a video with ZS² (the README's main-job command). Same as the ``zs2-sample`` console script."""

import sys

from zs2_kernels.cli import sample_main

if __name__ == "__main__":
    sys.exit(sample_main())
