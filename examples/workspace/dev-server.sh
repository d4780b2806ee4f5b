#!/bin/sh
# Starts the dev server after the build; it counts as done once it listens.
set -eu
unitsync want dev-server build
unitsync start dev-server
echo "serving dist/ on http://localhost:3000"
sleep 0.2
unitsync complete dev-server
