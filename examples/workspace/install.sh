#!/bin/sh
# Installs dependencies once the clone is there. Set UNITSYNC_DEMO_FAIL=install to watch a failure
# propagate: build, lint, tests and the dev server fail with it, without running.
set -eu
unitsync want install clone
unitsync start install
echo "npm ci"
sleep 0.7
if [ "${UNITSYNC_DEMO_FAIL:-}" = install ]; then
    echo "npm ERR! network timeout fetching left-pad" >&2
    unitsync fail install --reason "npm ci: network timeout"
    exit 1
fi
echo "added 812 packages in 0.7s"
unitsync complete install
