#!/usr/bin/env bash
# Set up (once) and run the whole test suite: real Redis, Celery, PostgreSQL and headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
install_contrail dev
# Browser tests drive the system's Chromium; Playwright's own browser download is not used.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "chromium install failed; browser tests will say why" >&2
fi
exec .venv/bin/python -m pytest -n "${CONTRAIL_TEST_WORKERS:-4}" --dist loadgroup "$@"
