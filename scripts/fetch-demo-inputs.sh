#!/usr/bin/env bash
# Downloads the host part of the hermetic demo world: the Debian kernel package whose vmlinuz and
# virtio modules the demo image boots (busybox-static comes from setup.sh's package list).
# Idempotent: does nothing when the package is already in the cache directory.
set -euo pipefail
CACHE=${SUPPLY_CHAIN_CACHE:-/var/cache/secure-supply-chain}

kernel_package() {
  # The kernel the linux-image-amd64 meta-package currently points at, e.g. linux-image-6.1.0-56-amd64.
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

if ls "$CACHE"/linux-image-*-amd64_*_amd64.deb >/dev/null 2>&1 && [ -z "${DEMO_KERNEL_PACKAGE:-}" ]; then
  echo "fetch-demo-inputs: kernel package present: $(ls "$CACHE"/linux-image-*-amd64_*_amd64.deb | tail -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "fetch-demo-inputs: no apt-get: put a Debian linux-image-<version>-amd64_*.deb into $CACHE by hand" >&2
  exit 1
fi
pkg=${DEMO_KERNEL_PACKAGE:-$(kernel_package)}
if [ -z "$pkg" ]; then
  apt-get update -qq
  pkg=$(kernel_package)
fi
[ -n "$pkg" ] || { echo "fetch-demo-inputs: cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }
if ! mkdir -p "$CACHE" 2>/dev/null || [ ! -w "$CACHE" ]; then
  echo "fetch-demo-inputs: cannot write $CACHE: run as root, or set SUPPLY_CHAIN_CACHE to a writable directory (demo-world reads the same variable)" >&2
  exit 1
fi
tmp=$(mktemp -d "$CACHE/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt's _apt user must be able to write where it downloads, or apt warns and downloads unsandboxed.
chmod 755 "$tmp"; chown _apt "$tmp" 2>/dev/null || true
(cd "$tmp" && apt-get download -q "$pkg") || { apt-get update -qq && (cd "$tmp" && apt-get download -q "$pkg"); }
mv "$tmp"/*.deb "$CACHE"/
echo "fetch-demo-inputs: downloaded $(ls "$CACHE"/"$pkg"_*.deb)"
