#!/usr/bin/env bash
# The README's test command (`npm test`, also `./scripts/test.sh` on a fresh machine): installs what is
# missing, builds the apps and the Pulumi engine, type-checks, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# rustup installs cargo here; a non-login shell (CI) may not have it on PATH yet.
[ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
bash scripts/setup.sh
[ -d node_modules/@pulumi/pulumi ] || npm ci --no-audit --no-fund
npm run typecheck
bash scripts/build-apps.sh
# Reuses the release build above, so the reader's unit tests add seconds, not a debug build.
cargo test --release --locked --manifest-path apps/db-reader/Cargo.toml
# The engine test needs a `pulumi`; the official one when installed, else one built from Go modules.
PATH="$(bash scripts/pulumi-engine.sh):$PATH"
export PATH
npx ava
