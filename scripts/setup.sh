#!/usr/bin/env bash
# Installs the host tools secure-supply-chain needs. Idempotent. On Debian/Ubuntu as root it installs
# what is missing with apt-get; elsewhere it prints what is missing and how to get it, and exits 1.
set -euo pipefail

# What is needed and which package provides it: pipeline/lib/host-tools.tsv (the one map).
TOOLS_MAP="$(dirname "$0")/../pipeline/lib/host-tools.tsv"
missing=()
while IFS=$'\t' read -r tool pkg _; do
  case "$tool" in
    ""|"#"*) continue ;;
    /*) [ -e "$tool" ] || missing+=("$pkg") ;;
    *) command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done < "$TOOLS_MAP"
# python3 -m venv (the attestation interop test's verifier, below) needs Debian's ensurepip
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# busybox-static specifically (the dynamic busybox cannot be a sandboxed Nix builder)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
# nix-bin only Recommends it, and --no-install-recommends skips it: it creates the nixbld group and
# users (Nix as root builds as them: "group 'nixbld' ... does not exist" without) and /etc/nix/nix.conf.
dpkg-query -W -f='${Status}' nix-setup-systemd 2>/dev/null | grep -q "ok installed" || missing+=(nix-setup-systemd)
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all host tools present"
else
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing host packages: ${missing[*]}" >&2
    echo "setup: on Debian/Ubuntu run as root: apt-get install ${missing[*]}" >&2
    echo "setup: elsewhere install Nix (>= 2.8), bubblewrap, QEMU, Docker, PostgreSQL with libpq (>= 14) headers, Boost, a static busybox" >&2
    exit 1
  fi
fi

# The demo world's kernel package (a Debian .deb in /var/cache/secure-supply-chain)
bash "$(dirname "$0")/fetch-demo-inputs.sh"

# The second Nix (sid's nix-bin, 2.34) that the isolation and rebuild tests run under bwrap: a root
# file system from Debian's mirror, cached (about 35 s cold on 2 cores, 20 ms warm).
rootfs=$(bash "$(dirname "$0")/nix-rootfs.sh" sid)
echo "setup: second Nix: $rootfs"
# The same Nix with sshd and socat: the root of the remote-builder test hosts (scripts/nix-builder.sh).
builder_root=$(bash "$(dirname "$0")/nix-rootfs.sh" --builder sid)
echo "setup: remote builders' root: $builder_root"

# Verifiers that are not ours, for test/steps/attest-interop: securesystemslib checks the DSSE envelopes,
# cyclonedx-python-lib's validator (jsonschema + its bundled CycloneDX schemas) the SBOM. Pinned, in a venv.
PYENV="${XDG_CACHE_HOME:-$HOME/.cache}/secure-supply-chain/pyenv"
PYREQS="securesystemslib[crypto]==1.6.0 cyclonedx-python-lib[json-validation]==11.12.0"
if [ "$(cat "$PYENV/requirements" 2>/dev/null)" != "$PYREQS" ]; then
  echo "setup: installing $PYREQS into $PYENV"
  rm -rf "$PYENV"
  python3 -m venv "$PYENV"
  # shellcheck disable=SC2086 # one word per requirement
  "$PYENV/bin/pip" install --quiet --disable-pip-version-check $PYREQS
  echo "$PYREQS" > "$PYENV/requirements"
fi

# Rust toolchain for apps/db-reader. rustup's ~/.cargo/bin counts (build-apps.sh and test.sh look
# there): .ci/run calls this script from a non-login shell before test.sh puts it on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  # Debian 12's cargo (0.66) is older than apps/db-reader's rust-version and Cargo.lock v4.
  echo "setup: cargo not found: install Rust >= 1.85 with rustup (https://rustup.rs)" >&2
  exit 1
fi

# Go builds the Pulumi engine when no `pulumi` is installed (scripts/pulumi-engine.sh)
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ] && ! command -v pulumi >/dev/null 2>&1; then
  echo "setup: neither pulumi nor go found: install the Pulumi CLI, or Go >= 1.22 (https://go.dev/dl) to build it" >&2
  exit 1
fi
