#!/usr/bin/env bash
# A second, independent Nix: a Debian root file system holding another release's nix-bin (sid: 2.34,
# trixie: 2.26), built with mmdebstrap from the host's Debian mirror. The bwrap isolation runs its
# /usr instead of the host's (IsolatedRun.systemRoot, `supply-chain rebuild --nix-root DIR`), so a
# rebuild or an evaluation is done by a Nix that shares no binary with the host's 2.8.
#
# usage: scripts/nix-rootfs.sh [--rebuild] [--docker] [--builder] [SUITE]     (default SUITE: sid)
#   --rebuild  build again even if cached, and say whether the new tarball's digest differs
#   --builder  also OpenSSH's server and client and socat: the root of a Nix remote builder
#              (scripts/nix-builder.sh), or a --nix-root for a rebuild that uses remote builders;
#              cached and pinned as <suite>-builder; it has no host keys (each builder makes its own)
#   --docker   also `docker import` the tarball as supply-chain-nix-<suite>:<sha256 prefix> (reused if
#              present; honours DOCKER_HOST, e.g. scripts/dockerd.sh --private DIR)
# prints one JSON line: {"suite", "root", "tarball", "sha256", "nixVersion", "pinned"[, "image", "id"]}
#
# Cached in ${XDG_CACHE_HOME:-~/.cache}/secure-supply-chain/nix-rootfs/<suite>/ (rootfs.tar, root/,
# rootfs.json) and reused when present. The tarball is deterministic (mmdebstrap with
# SOURCE_DATE_EPOCH=0: sorted, fixed mtimes), so its sha256 pins it: scripts/nix-rootfs.sha256 holds
# the digests recorded here, and "pinned" says whether this tarball is that one (false when the
# mirror's suite has moved on; stderr says so).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rebuild=0 docker=0 suite=sid builder=0
for a in "$@"; do
  case "$a" in
    --rebuild) rebuild=1 ;;
    --docker) docker=1 ;;
    --builder) builder=1 ;;
    -*) echo "nix-rootfs.sh: unknown option $a" >&2; exit 2 ;;
    *) suite=$a ;;
  esac
done
for t in mmdebstrap bwrap flock sha256sum tar; do
  command -v "$t" >/dev/null || { echo "nix-rootfs.sh: missing $t (scripts/setup.sh installs mmdebstrap, bubblewrap)" >&2; exit 2; }
done
flavour=$suite include=nix-bin,mount hooks=()
if [ "$builder" = 1 ]; then
  flavour=$suite-builder include=$include,openssh-server,openssh-client,socat
  # Host keys and a machine id made at install time would differ on every build (and be shared by
  # every builder made from the tarball): each builder generates its own keys when it starts.
  # shellcheck disable=SC2016 # "$1" is the root, expanded by mmdebstrap's hook shell
  hooks=(--customize-hook='rm -f "$1"/etc/ssh/ssh_host_* "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id')
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/secure-supply-chain/nix-rootfs/$flavour"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one build per suite at a time (setup and a test may ask together)
rm -rf "$cache"/.build-* # a killed build's leftovers

pin=$(awk -v s="$flavour" '$2 == s {print $1}' "$here/nix-rootfs.sha256" 2>/dev/null || true)

# The Debian archive the host uses (deb822 URIs: or a one-line deb entry), not its security mirror.
mirror() {
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || :; } |
    awk '/^URIs:/ {print $2} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' |
    { grep -E '/debian/?$' || :; } | head -n 1
}

build() {
  local m sum old ver
  m=${NIX_ROOTFS_MIRROR:-$(mirror)}
  m=${m:-http://deb.debian.org/debian}
  tmp=$(mktemp -d "$cache/.build-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "nix-rootfs.sh: building the $flavour root file system from $m" >&2
  # essential + nix-bin's dependencies + mount (the isolation mounts its own /proc); no docs, man
  # pages or locales. Check-Valid-Until off: the mirror's sid Release is past its Valid-Until.
  SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=essential --include="$include" "${hooks[@]}" \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$suite" "$tmp/rootfs.tar" "$m" >&2
  sum=$(sha256sum "$tmp/rootfs.tar" | cut -c1-64)
  old=$(sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p' "$cache/rootfs.json" 2>/dev/null || true)
  if [ -n "$old" ] && [ "$old" != "$sum" ]; then echo "nix-rootfs.sh: the rebuilt $flavour tarball differs from the cached one: sha256 $sum, was $old (replacing it)" >&2; fi
  mkdir "$tmp/root"
  tar -C "$tmp/root" --exclude='./dev/*' -xf "$tmp/rootfs.tar" # bwrap brings its own /dev
  # The version the root's Nix itself reports (it runs: nothing of the host's Nix is visible).
  ver=$(bwrap --ro-bind "$tmp/root" / --dev /dev --proc /proc --unshare-all --die-with-parent --clearenv /usr/bin/nix --version | awk '{print $NF}')
  rm -rf "$cache/root" "$cache/rootfs.json"
  mv "$tmp/rootfs.tar" "$cache/rootfs.tar"
  mv "$tmp/root" "$cache/root"
  printf '{"suite": "%s", "root": "%s", "tarball": "%s", "sha256": "%s", "nixVersion": "%s"}\n' \
    "$suite" "$cache/root" "$cache/rootfs.tar" "$sum" "$ver" >"$cache/rootfs.json"
}

if [ "$rebuild" = 1 ] || [ ! -s "$cache/rootfs.json" ] || [ ! -x "$cache/root/usr/bin/nix" ] || [ ! -f "$cache/rootfs.tar" ]; then build; fi
info=$(cat "$cache/rootfs.json")
sum=$(sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p' <<<"$info")
pinned=false
if [ "$sum" = "$pin" ]; then pinned=true
elif [ -n "$pin" ]; then echo "nix-rootfs.sh: the $flavour tarball (sha256 $sum) is not the pinned one in scripts/nix-rootfs.sha256 ($pin): the mirror's $suite has moved on" >&2
fi
info="${info%\}}, \"pinned\": $pinned"

if [ "$docker" = 1 ]; then
  command -v docker >/dev/null || { echo "nix-rootfs.sh: missing docker (scripts/setup.sh installs docker.io)" >&2; exit 2; }
  image="supply-chain-nix-$flavour:${sum:0:12}"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "nix-rootfs.sh: importing $image" >&2
    docker import --change 'ENV PATH=/usr/bin:/bin' --change 'CMD ["/bin/sh"]' "$cache/rootfs.tar" "$image" >/dev/null
  fi
  info="$info, \"image\": \"$image\", \"id\": \"$(docker image inspect --format '{{.Id}}' "$image")\""
fi
echo "$info}"
