#!/bin/sh
# Starts the AI coding agent once the code and the user's config are in place.
set -eu
unitsync want claude clone dotfiles
unitsync start claude
echo "claude: indexing ./shop"
sleep 0.5
echo "claude: ready for instructions"
unitsync complete claude
