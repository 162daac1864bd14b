"""``python -m logitprobe``: the command line (also what ``torchrun -m logitprobe`` starts)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
