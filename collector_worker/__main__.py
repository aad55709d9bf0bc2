"""``python -m collector_worker`` runs a collector, the same as ``contrail collector``."""

import sys

from .cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports this module in a child
    main(["collector", *sys.argv[1:]])
