# Sourced by up.sh and test.sh: create .venv once and install Contrail into it with the given extras.
# Usage: install_contrail <extras>
install_contrail() {
  local python="${PYTHON:-python3.11}"
  command -v "$python" >/dev/null 2>&1 || python=python3
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install --quiet --upgrade pip
  # The runtime dependencies at the versions the image pins (deploy/requirements.lock), so the tests run
  # what production runs; test-only tools are not in the lock and come at their latest versions.
  .venv/bin/python -m pip install --quiet -e ".[$1]" -c deploy/requirements.lock
}
