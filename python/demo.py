"""The demo web app (the README's "Try it in the browser"). Same as the ``zs2-demo`` console script."""

import sys

from zs2_kernels.demo.cli import demo_main

if __name__ == "__main__":
    sys.exit(demo_main())
