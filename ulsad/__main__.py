"""`python -m ulsad ...`: the same command line as the `ulsad` console script."""

import sys

from ulsad.cli import main

if __name__ == "__main__":
    sys.exit(main())
