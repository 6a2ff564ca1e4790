#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter (Rasa 3.6 needs 3.10), or explain what
# to install. Order: $CRM_PYTHON, python3.10 on PATH (if it really runs), pyenv's
# versions/3.10.*, the usual system locations.
set -u
try() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1 && { echo "$1"; exit 0; }; }
try "${CRM_PYTHON:-}"
try "$(command -v python3.10 2>/dev/null)"
roots=()
command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)")
roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" "/root/.pyenv" "/opt/pyenv")
for root in "${roots[@]}"; do
  [ -n "$root" ] || continue
  for candidate in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
    try "$candidate/bin/python3.10"
  done
done
for candidate in /usr/bin/python3.10 /usr/local/bin/python3.10; do try "$candidate"; done
cat >&2 <<'MSG'
error: Python 3.10 not found (Rasa 3.6 requires Python 3.10, not 3.11+).
Install it with one of:
  pyenv install 3.10.13                 # then re-run make
  apt-get install python3.10 python3.10-venv
or point CRM_PYTHON at a python3.10 binary: make setup CRM_PYTHON=/path/to/python3.10
MSG
exit 1
