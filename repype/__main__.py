"""`python -m repype`: the command line (see :mod:`repype.cli`)."""

import sys

from repype.cli import main

if __name__ == "__main__":
    sys.exit(main())
