"""``python -m contrail_cli``: the ``contrail`` command without the console script on PATH."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
