#!/usr/bin/env bash
# Builds the local rebuilder image without any registry: the host's Debian nix-bin, exactly the
# shared libraries it loads (ldd), and a static busybox for /bin/sh, on an otherwise empty rootfs,
# then `docker import`. Nix lives in /usr, so /nix/store starts EMPTY in every container (images
# whose Nix is in /nix/store, like nixos/nix, work too: see docs/rebuild-verify.md).
# The rootfs tarball is deterministic (sorted, mtime 0, uid 0), its sha256 names the tag, and an
# image already carrying that tag is reused.
#
# usage: pipeline/rebuilder-image/build.sh [REPO]     (default REPO: supply-chain-rebuilder)
# prints one JSON line: {"image": "<repo>:<tag>", "id": "sha256:...", "rootfsSha256": "...", "nix": "..."}
# Honours DOCKER_HOST (e.g. a private engine from scripts/dockerd.sh --private DIR).
set -euo pipefail
repo=${1:-supply-chain-rebuilder}
for t in nix docker ldd tar busybox; do
  command -v "$t" >/dev/null || { echo "build.sh: missing $t (scripts/setup.sh installs nix-bin, docker.io, busybox-static)" >&2; exit 2; }
done
bb=$(command -v busybox)
if ldd "$bb" >/dev/null 2>&1; then echo "build.sh: $bb is dynamically linked: install busybox-static" >&2; exit 2; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{usr/bin,usr/sbin,usr/lib,usr/lib64,etc/nix,tmp,root,nix,var/tmp}
# merged /usr, like the host, so library paths resolve the same way
ln -s usr/bin "$root/bin"; ln -s usr/sbin "$root/sbin"; ln -s usr/lib "$root/lib"; ln -s usr/lib64 "$root/lib64"
chmod 1777 "$root/tmp" "$root/var/tmp"

copy() { # host path (maybe through symlinked dirs) -> same canonical place in root, links followed
  local f=$1 canon
  canon="$(realpath "$(dirname "$f")")/$(basename "$f")"
  cp -a --parents "$canon" "$root/" 2>/dev/null || cp -a --parents "$canon" "$root/"
  if [ -L "$canon" ]; then copy "$(realpath "$canon")"; fi
}

nixbin=$(realpath "$(command -v nix)")
copy "$nixbin"
for l in nix-build nix-store nix-instantiate nix-hash nix-env nix-shell nix-channel nix-collect-garbage nix-copy-closure nix-daemon nix-prefetch-url; do
  ln -sf nix "$root/usr/bin/$l"
done
objs=("$nixbin")
for so in /usr/lib/nix/*.so*; do copy "$so"; objs+=("$so"); done
if [ -d /usr/libexec/nix ]; then mkdir -p "$root/usr/libexec"; cp -a /usr/libexec/nix "$root/usr/libexec/"; fi
for f in $(ldd "${objs[@]}" 2>/dev/null | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}' | sort -u); do copy "$f"; done
# glibc loads these by name at run time (user/group lookups), ldd cannot see them
for f in /usr/lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_dns.so.2 /usr/lib/x86_64-linux-gnu/libresolv.so.2; do [ -e "$f" ] && copy "$f"; done

cp "$bb" "$root/usr/bin/busybox"
for a in $("$bb" --list); do [ -e "$root/usr/bin/$a" ] || ln -s busybox "$root/usr/bin/$a"; done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnixbld:x:30000:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
cat >"$root/etc/nix/nix.conf" <<'EOF'
# offline rebuilder: no substituters; the container (network none) is the isolation
substituters =
build-users-group =
sandbox = false
EOF

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
sum=$(sha256sum "$work/rootfs.tar" | cut -c1-64)
nixver=$(nix --version | awk '{print $NF}')
image="$repo:nix$nixver-${sum:0:12}"
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "build.sh: importing $image ($(du -h "$work/rootfs.tar" | cut -f1))" >&2
  docker import --change 'ENV PATH=/usr/bin:/bin' --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$image" >/dev/null
fi
id=$(docker image inspect --format '{{.Id}}' "$image")
printf '{"image": "%s", "id": "%s", "rootfsSha256": "%s", "nix": "%s"}\n' "$image" "$id" "$sum" "$nixver"
