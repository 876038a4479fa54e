#!/usr/bin/env bash
# Downloads the host part of the hermetic demo world: the Debian kernel package whose vmlinuz and
# virtio modules the demo image boots (busybox-static comes from setup.sh's package list), the
# Debian packages of the system image's toolchain and runtime (pipeline/demo-world/system/
# packages.txt) and db-reader's crates into cargo's registry cache (docs/demo-world.md).
# Idempotent: downloads only what is missing from the cache directory.
set -euo pipefail
CACHE=${SUPPLY_CHAIN_CACHE:-/var/cache/secure-supply-chain}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

# apt-get download into a fresh directory apt's _apt user can write (or apt warns and downloads
# unsandboxed), then into $2 with the epoch's ':' (apt writes %3a) as '_': a file:// URL and a
# store name stay plain.
download_debs() { # dest pkg...
  local dest=$1; shift
  local tmp; tmp=$(mktemp -d "$CACHE/.download.XXXXXX")
  chmod 755 "$tmp"; chown _apt "$tmp" 2>/dev/null || true
  (cd "$tmp" && apt-get download -q "$@") || { apt-get update -qq && (cd "$tmp" && apt-get download -q "$@"); }
  mkdir -p "$dest"
  for f in "$tmp"/*.deb; do b=$(basename "$f"); mv "$f" "$dest/${b//%3a/_}"; done
  rm -rf "$tmp"
}

system_packages() {
  local missing=()
  while read -r role pkg; do
    case "$role" in ''|'#'*) continue ;; esac
    ls "$CACHE/debs/${pkg}_"*.deb >/dev/null 2>&1 || missing+=("$pkg")
  done < "$ROOT/pipeline/demo-world/system/packages.txt"
  if [ ${#missing[@]} -gt 0 ]; then
    download_debs "$CACHE/debs" "${missing[@]}"
    echo "fetch-demo-inputs: downloaded ${#missing[@]} system package(s) into $CACHE/debs"
  else
    echo "fetch-demo-inputs: system packages present in $CACHE/debs"
  fi
  # The crates Cargo.lock pins, into cargo's own registry cache (builtin:fetchurl reads them there).
  if command -v cargo >/dev/null 2>&1; then
    cargo fetch --locked --manifest-path "$ROOT/apps/db-reader/Cargo.toml" -q
    echo "fetch-demo-inputs: db-reader's crates present in cargo's registry cache"
  else
    echo "fetch-demo-inputs: no cargo: install Rust (rustup) to build the system image's db-reader" >&2
  fi
}

kernel_package() {
  # The kernel the linux-image-amd64 meta-package currently points at, e.g. linux-image-6.1.0-56-amd64.
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

if ! command -v apt-get >/dev/null 2>&1; then
  echo "fetch-demo-inputs: no apt-get: put a Debian linux-image-<version>-amd64_*.deb (and the packages of pipeline/demo-world/system/packages.txt into debs/) into $CACHE by hand" >&2
  exit 1
fi
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  echo "fetch-demo-inputs: cannot write $CACHE: run as root, or set SUPPLY_CHAIN_CACHE to a writable directory (demo-world reads the same variable)" >&2
  exit 1
fi
if ls "$CACHE"/linux-image-*-amd64_*_amd64.deb >/dev/null 2>&1 && [ -z "${DEMO_KERNEL_PACKAGE:-}" ]; then
  echo "fetch-demo-inputs: kernel package present: $(ls "$CACHE"/linux-image-*-amd64_*_amd64.deb | tail -1)"
  system_packages
  exit 0
fi
pkg=${DEMO_KERNEL_PACKAGE:-$(kernel_package)}
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { echo "fetch-demo-inputs: cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }
download_debs "$CACHE" "$pkg"
echo "fetch-demo-inputs: downloaded $(ls "$CACHE"/"$pkg"_*.deb)"
system_packages
