#!/usr/bin/env bash
# The README's test command (`npm test`): builds the apps, type-checks, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent typecheck
npm run --silent build:apps
npx ava
