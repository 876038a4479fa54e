#!/usr/bin/env bash
# A Nix remote builder as a test host on this machine: its own network namespace (joined to the host
# by one veth pair, no route anywhere else), its own Nix store (Debian sid's Nix, scripts/nix-rootfs.sh
# --builder) and its own sshd, reachable as ssh-ng://root@ADDRESS with the key that `start` was given.
# What the remote-builder tests and `npm run bench:builders` stand up twice; a real deployment uses
# real machines, configured the same way (docs/scaling.md).
#
# usage: scripts/nix-builder.sh start NAME INDEX STATE_DIR AUTHORIZED_KEY_FILE [JOBS]
#          runs in the foreground until killed (then stop cleans up); prints one JSON line when sshd
#          listens: {"name", "address", "hostKey" (base64, the machines format's 8th field), "store"}
#        scripts/nix-builder.sh stop NAME INDEX
#   NAME   a short name (the namespace is sc-builder-NAME); INDEX 1..250 picks 10.231.INDEX.0/30
#   JOBS   builds the builder runs at once (its nix.conf max-jobs; default 1)
# STATE_DIR keeps the builder's store (STATE_DIR/nix: look inside to see what it built), its host key,
# config and sshd log. Needs root, iproute2 and bwrap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-} name=${2:-} index=${3:-}
usage() { echo "usage: $0 start NAME INDEX STATE_DIR AUTHORIZED_KEY_FILE [JOBS] | stop NAME INDEX" >&2; exit 2; }
if [ -z "$name" ] || ! [[ "$index" =~ ^[0-9]+$ ]] || [ "$index" -lt 1 ] || [ "$index" -gt 250 ]; then usage; fi
ns=sc-builder-$name
host_if=scb$index-h
guest_if=scb$index-g
host_addr=10.231.$index.1
addr=10.231.$index.2

stop() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || :
  ip link del "$host_if" 2>/dev/null || :
  ip netns del "$ns" 2>/dev/null || :
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) usage ;;
esac
state=${4:-} pubkey=${5:-} jobs=${6:-1}
if [ -z "$state" ] || [ ! -f "$pubkey" ]; then usage; fi
for t in ip bwrap; do command -v "$t" >/dev/null || { echo "nix-builder.sh: missing $t" >&2; exit 2; }; done
root=$(bash "$here/nix-rootfs.sh" --builder sid | sed -n 's/.*"root": "\([^"]*\)".*/\1/p')
[ -x "$root/usr/sbin/sshd" ] || { echo "nix-builder.sh: $root has no sshd" >&2; exit 2; }

# A namespace left by a killed run of the same name goes first.
stop
mkdir -p "$state/nix" "$state/etc" "$state/root"
state=$(cd "$state" && pwd)
cp "$pubkey" "$state/etc/authorized_keys"
# The root's own dirs read-only (links as links), on bwrap's empty root so that mount points can be made.
sys=()
for p in "$root"/*; do
  b=${p##*/}
  case "$b" in nix|root|run|tmp|proc|dev) continue ;; esac
  if [ -L "$p" ]; then sys+=(--symlink "$(readlink "$p")" "/$b"); elif [ -d "$p" ]; then sys+=(--ro-bind "$p" "/$b"); fi
done
[ -f "$state/etc/ssh_host_ed25519_key" ] ||
  bwrap "${sys[@]}" --bind "$state/etc" /state --dev /dev --unshare-all --die-with-parent \
    /usr/bin/ssh-keygen -q -t ed25519 -N "" -C "$name" -f /state/ssh_host_ed25519_key
# The builder's whole Nix configuration: no substituters (it builds what it is sent, from what it is
# sent), its own sandbox, root builds without build users (as the isolated rebuild does).
cat > "$state/etc/nix.conf" <<EOF
build-users-group =
sandbox = true
sandbox-fallback = false
substituters =
max-jobs = $jobs
EOF
cat > "$state/etc/sshd_config" <<EOF
Port 22
ListenAddress $addr
HostKey /state/ssh_host_ed25519_key
AuthorizedKeysFile /state/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
# nix-daemon --stdio, which ssh-ng runs, reads its nix.conf here
SetEnv NIX_CONF_DIR=/state
EOF

ip netns add "$ns"
trap stop EXIT
ip link add "$host_if" type veth peer name "$guest_if"
ip link set "$guest_if" netns "$ns"
ip addr add "$host_addr/30" dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$addr/30" dev "$guest_if"
ip -n "$ns" link set "$guest_if" up
# No default route inside: the builder reaches the host's end of the pair and nothing beyond it.

printf '{"name": "%s", "address": "%s", "hostKey": "%s", "store": "%s"}\n' "$name" "$addr" \
  "$(base64 -w0 < "$state/etc/ssh_host_ed25519_key.pub")" "$state/nix"
# /nix, /root and the state writable, sshd's privilege separation dir on a tmpfs. Nix's sandbox needs a fully visible /proc of its own pid namespace:
# mounted before sshd starts.
ip netns exec "$ns" bwrap "${sys[@]}" --bind "$state/nix" /nix --bind "$state/root" /root --bind "$state/etc" /state \
  --tmpfs /run --tmpfs /tmp --dev /dev --dir /proc --unshare-pid --unshare-ipc --die-with-parent \
  --clearenv --setenv PATH /usr/sbin:/usr/bin:/sbin:/bin --setenv HOME /root \
  /bin/sh -c 'mount -t proc proc /proc && mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f /state/sshd_config' \
  2>> "$state/sshd.log"
