#!/bin/sh
# Debian's Chromium and ChromeDriver, for the dashboard's browser test (tests/stream/test_dashboard.py).
# Idempotent; `make install` runs it. Nothing is downloaded at test time.
set -e
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-browser: installing Debian's chromium and chromium-driver needs root and apt-get;" \
         "install them yourself, or the dashboard's browser test fails" >&2
    exit 0
fi
echo "setup-browser: installing Debian's chromium and chromium-driver"
packages="chromium chromium-driver"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages >/dev/null 2>&1 || {
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages >/dev/null
}
