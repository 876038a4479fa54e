#!/usr/bin/env bash
# Builds apps/db-writer (CMake) and apps/db-reader (cargo) for the host, for tests and benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
# apps/db-writer (C++20, CMake): apps/db-writer/build/db-writer (flock-serialised with the tests).
bash apps/db-writer/build.sh

# apps/db-reader (Rust, axum): --locked builds exactly the committed Cargo.lock. Unit tests are
# separate: cargo test --release --locked --manifest-path apps/db-reader/Cargo.toml (reuses this build)
cargo_bin="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
[ -x "$cargo_bin" ] || { echo "build-apps: cargo not found: install Rust (rustup) to build apps/db-reader" >&2; exit 2; }
"$cargo_bin" build --release --locked --manifest-path apps/db-reader/Cargo.toml
