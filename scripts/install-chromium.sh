#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests (make test-browser) when
# no Chromium is on PATH. Needs root (or sudo) and apt-get; prints why and
# exits 0 without installing when it cannot, so the tests skip with that reason.
set -euo pipefail
for b in chromium chromium-browser google-chrome google-chrome-stable; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "chromium: $(command -v "$b") ($("$b" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
  fi
done
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed (no apt-get on this host); the browser tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "chromium: not installed (not root and no passwordless sudo); the browser tests will be skipped" >&2
    exit 0
  fi
fi
echo "chromium: installing with apt-get (Debian's chromium package)"
# Bounded: a host without a reachable mirror gives up in about a minute, not
# after apt's default retries, and the tests skip saying why.
APT_OPTS=(-o Acquire::http::Timeout=20 -o Acquire::https::Timeout=20 -o Acquire::Retries=1)
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends chromium >/tmp/ttftlab-install-chromium.log 2>&1; then
  $SUDO apt-get "${APT_OPTS[@]}" update >>/tmp/ttftlab-install-chromium.log 2>&1 || true
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends chromium >>/tmp/ttftlab-install-chromium.log 2>&1; then
    echo "chromium: apt-get install failed (log: /tmp/ttftlab-install-chromium.log); the browser tests will be skipped" >&2
    exit 0
  fi
fi
echo "chromium: $(command -v chromium) ($(chromium --version 2>/dev/null || true))"
