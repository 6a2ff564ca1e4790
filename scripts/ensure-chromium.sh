#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests when it is missing (Playwright
# drives it through executable_path; it never downloads a browser). Idempotent.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "browser: chromium is missing; install it with: sudo apt-get install chromium" >&2
  exit 1
fi
echo "browser: installing chromium (Debian package, ~1 min)"
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
command -v chromium >/dev/null
