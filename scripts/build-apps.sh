#!/usr/bin/env bash
# Builds apps/db-writer (CMake) and apps/db-reader (cargo) for the host, for tests and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "build-apps: nothing yet" >&2
