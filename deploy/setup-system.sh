#!/bin/sh
# The Debian packages the test suite needs besides Python's: chromium and chromium-driver for the
# dashboard's browser test (tests/stream/worker/test_dashboard.py), docker-compose to validate
# docker-compose.yml without a Docker engine (tests/test_deploy.py).
# Idempotent; `make install` runs it. Nothing is downloaded at test time.
set -e
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system: installing Debian's$missing needs root and apt-get; install them yourself," \
         "or the tests that use them fail" >&2
    exit 0
fi
echo "setup-system: installing Debian's$missing"
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >/dev/null
}
