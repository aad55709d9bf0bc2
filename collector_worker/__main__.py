"""``python -m collector_worker`` runs a collector, the same as ``contrail collector``."""

import sys

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports this module in a child
    from .commands import collector

    sys.exit(collector.main(args=sys.argv[1:], prog_name="contrail collector"))
