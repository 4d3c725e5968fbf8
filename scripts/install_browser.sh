#!/usr/bin/env bash
# Install Debian's Chromium (system-wide, with apt-get) for the report's browser test
# (tests/report/test_browser.py), once. Does nothing when Chromium is already there.
# INFSCOPE_SKIP_BROWSER=1 skips the install (the browser test then skips); without apt-get or root
# it says so and the test skips (CI sets INFSCOPE_REQUIRE_BROWSER=1, which turns that skip into a
# failure).
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "${INFSCOPE_SKIP_BROWSER:-0}" = "1" ]; then
  echo "install_browser.sh: INFSCOPE_SKIP_BROWSER=1: not installing chromium; the report's browser test will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
fi
if ! command -v apt-get >/dev/null 2>&1 || [ "$SUDO" = "none" ]; then
  echo "install_browser.sh: cannot install chromium here (needs apt-get as root); the browser test will skip" >&2
  exit 0
fi
echo "install_browser.sh: installing Debian's chromium and chromium-driver system-wide with apt-get," >&2
echo "  for the report's browser test (about 300 MB; INFSCOPE_SKIP_BROWSER=1 make test skips it)" >&2
$SUDO apt-get update -q >/dev/null && \
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium chromium-driver >/dev/null || \
  echo "install_browser.sh: apt-get install chromium failed; the browser test will skip" >&2
