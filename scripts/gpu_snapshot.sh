#!/usr/bin/env bash
# Copies HEAD plus the given changed files into .gpusnap/ (git-ignored locally), so a
# device run sees exactly those changes and not other work in progress in the tree.
# Usage: bash scripts/gpu_snapshot.sh FILE...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .gpusnap && mkdir .gpusnap
git archive HEAD | tar -x -C .gpusnap
for f in "$@"; do mkdir -p ".gpusnap/$(dirname "$f")"; cp "$f" ".gpusnap/$f"; done
