#!/usr/bin/env bash
# Builds apps/db-writer/build/db-writer (Release). Serialised with flock: tests and
# scripts/build-apps.sh may call it at the same time.
set -euo pipefail
cd "$(dirname "$0")"
command -v cmake >/dev/null || { echo "db-writer build: cmake not found (apt-get install cmake, or scripts/setup.sh)" >&2; exit 2; }
mkdir -p build
exec 9>"build/.lock"  # inside build/: never part of a Nix source
flock 9
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >&2
cmake --build build -j2 >&2
