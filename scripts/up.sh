#!/usr/bin/env bash
# Set up (once) and run the whole Contrail stack on this machine with embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_contrail all
exec .venv/bin/contrail up "$@"
