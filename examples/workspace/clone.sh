#!/bin/sh
# Clones the repository: everything else builds on it.
set -eu
unitsync start clone
echo "cloning github.com/acme/shop into ./shop"
sleep 0.6
echo "cloned 1,204 files"
unitsync complete clone
