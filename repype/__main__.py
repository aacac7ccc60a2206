"""`python -m repype`: the command line (see :mod:`repype.cli`)."""

import sys

from repype.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
