#!/usr/bin/env bash
# Create .venv with Python 3.10 and install the committed lock file. Fast no-op when
# the stamp (hash of requirements.lock + pyproject.toml) matches what is installed.
# The project stamp also covers the top-level packages: an editable install maps
# the packages that existed when it ran, so a new one needs a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
hash=$(sha256sum requirements.lock | cut -c1-16)
stamp="$VENV/.installed-$hash"
packages=$(ls -d */__init__.py 2>/dev/null | sort | tr '\n' ' ')
project_stamp="$VENV/.project-$( (cat pyproject.toml; echo "$packages") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ]; then
  if [ ! -f "$project_stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
    rm -f "$VENV"/.project-*; touch "$project_stamp"
  fi
  exit 0
fi
python=$(scripts/find-python.sh)
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  echo "setup: creating $VENV with $python"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
fi
echo "setup: installing requirements.lock (first run takes a few minutes, ~2.7 GB)"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip<24.1" "setuptools<71" wheel
"$VENV/bin/python" -m pip install --quiet --progress-bar off -r requirements.lock 2> >(grep -v "is ignored: it is neither" >&2)
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
rm -f "$VENV"/.installed-* "$VENV"/.project-*
touch "$stamp" "$project_stamp"
echo "setup: done ($($VENV/bin/python --version), $(grep -c . requirements.lock) locked packages)"
