#!/bin/sh
# The isolated offline rebuild (pipeline/lib/offline-build.ts runs it under bwrap or Docker; the Pulumi
# docker component runs it in its container). POSIX sh + coreutils or busybox; no sed/awk, which
# nixos/nix lacks. Argument: the staging dir; environment: rebuildEnv (offline-build.ts).
# Phases (SC_PHASES): import the closure, evaluate the target (the drv must be SC_DRV), build. The audit
# runs "import eval", checks on the host, then "build" on the same store.
#
# The store may hold the image's own Nix closure (nixos/nix keeps Nix in /nix/store; bwrap and our
# local image start empty). What matters is that none of it stands in for the target: every path of
# the target's graph (its .drv files, their outputs, the sources the closure carries) must be absent
# before the import, or it would not be rebuilt / not come from the closure. Refused naming the path.
set -eu
W="$1"
export HOME="$W/home" XDG_CACHE_HOME="$W/home/.cache" XDG_STATE_HOME="$W/home/.state" TMPDIR=/tmp
mkdir -p "$HOME" "$W/nars"
say() { echo "== rebuild [$(date +%H:%M:%S)]: $*"; }
# The phases to run (the audit runs "import eval", checks on the host, then "build" on the same store).
phase() { case " $SC_PHASES " in *" $1 "*) return 0;; esac; return 1; }
# Proof of isolation: the interfaces of this network namespace (/proc/net follows the reader's namespace).
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > "$W/interfaces"
SANDBOX="$SC_SANDBOX"
nix-store --version > "$W/nix-version"
say "network interfaces inside: $(tr '\n' ' ' < "$W/interfaces"); $(cat "$W/nix-version")"
# sandbox-fallback off: a sandbox that cannot be set up must fail the build, not silently vanish.
# SC_BUILDERS: Nix remote builders reached only through the sockets of NIX_SSHOPTS' ssh config
# (lib/builders.ts), sent what they build from this store, never told to substitute.
set -- --option substituters "" --option builders "$SC_BUILDERS" --option builders-use-substitutes false --option sandbox "$SANDBOX" --option sandbox-fallback false --option build-users-group "" --option fallback false
[ -z "$SC_MAX_JOBS" ] || set -- "$@" --option max-jobs "$SC_MAX_JOBS"
if phase import; then
  # What the image brought (names under /nix/store), recorded before anything is imported.
  ls /nix/store > "$W/store-before" 2>/dev/null || : > "$W/store-before"
  if [ -s "$W/store-before" ]; then
    say "importing $SC_CLOSURE into a store already holding $(wc -l < "$W/store-before") paths of the image"
  else
    say "importing $SC_CLOSURE into the empty store"
  fi
  nix-store "$@" --import < "$SC_CLOSURE" > "$W/imported"
  say "imported $(wc -l < "$W/imported") paths"
fi
if phase eval; then
  # -vv logs each file the evaluation reads: the store paths among them are its evaluation-time inputs.
  quiet() { grep -v -e "^evaluating file" -e "^instantiated " -e "^copied source" -e "^processing attribute" "$W/eval.log"; }
  if [ -n "$SC_FLAKE" ]; then
    # No flake registry: every input must come from flake.lock and the closure.
    set -- "$@" --extra-experimental-features "nix-command flakes" --option flake-registry /dev/null
    drv=$(nix "$@" eval --raw "$SC_FLAKE.drvPath" -vv 2>"$W/eval.log") || { quiet; exit 92; }
    nix "$@" flake archive --json --dry-run "$SC_FLAKE_REF" > "$W/archive.json"
  else
    drv=$(nix-instantiate "$@" -vv "$SC_FILE" -A "$SC_ATTR" 2>"$W/eval.log") || { quiet; exit 92; }
  fi
  if [ "$drv" != "$SC_DRV" ]; then
    echo "error: the reviewed files evaluate to $drv inside the isolation but $SC_DRV outside"
    exit 91
  fi
  echo "$drv" > "$W/drv"
  # The graph as this Nix prints it (older: show-derivation; newer: derivation show), for checks outside.
  if [ "$SC_DUMP_GRAPH" = 1 ]; then
    nix --extra-experimental-features nix-command show-derivation -r "$drv" > "$W/graph.json" 2>/dev/null ||
      nix --extra-experimental-features nix-command derivation show -r "$drv" > "$W/graph.json"
  fi
  # The target's graph: what the closure carries (import lists paths it found already valid too), the
  # .drv closure, and every output of every derivation in it.
  nix-store -qR "$drv" > "$W/drvs.tmp"
  # shellcheck disable=SC2046 # one argument per .drv: store paths hold no whitespace
  nix-store -q --outputs $(grep '\.drv$' "$W/drvs.tmp") > "$W/outputs"
  cat "$W/imported" "$W/drvs.tmp" "$W/outputs" > "$W/graph"
  rm "$W/drvs.tmp"
  if [ -s "$W/store-before" ]; then
    hit=$(cut -d/ -f4 "$W/graph" | grep -Fx -f "$W/store-before" | head -n 1)
    if [ -n "$hit" ]; then
      echo "error: /nix/store/$hit of the target's graph was in the image's store before the import (it would not be rebuilt or not come from the closure): use an image whose store holds none of the target's paths"
      exit 93
    fi
  fi
fi
if phase build; then
  drv=$(cat "$W/drv")
  # A builder that already holds an output of the graph would not build it (Nix asks it for what is
  # missing), and that output would not be rebuilt from the closure: such outputs are deleted there
  # first, and a builder that keeps one (alive there) is refused.
  set -f # the store URIs hold '?': no globbing of them
  for store in $SC_BUILDER_STORES; do
    name=${store%%\?*}
    # shellcheck disable=SC2046 # one argument per store path
    nix-store --store "$store" --check-validity --print-invalid $(cat "$W/outputs") > "$W/builder-invalid" ||
      { echo "error: remote builder $name could not be used: it could not be asked which outputs it holds"; exit 94; }
    grep -vxF -f "$W/builder-invalid" "$W/outputs" > "$W/builder-held" || :
    if [ -s "$W/builder-held" ]; then
      say "remote builder $name already holds $(wc -l < "$W/builder-held") output(s) of the graph: deleting them there, so that they are rebuilt"
      # shellcheck disable=SC2046
      nix-store --store "$store" --delete $(cat "$W/builder-held") ||
        { echo "error: remote builder $name holds $(head -n 1 "$W/builder-held") of the target's graph and cannot delete it (alive there): it would not be rebuilt"; exit 94; }
    fi
  done
  set +f
  say "building $drv (sandbox $SANDBOX, substituters off${SC_BUILDER_URIS:+, remote builders $SC_BUILDER_URIS})"
  nix-store "$@" --realise "$drv" > "$W/outpath"
  : > "$W/hashes.tmp"
  # Every output built here (absent before, not imported) of every derivation in the graph, not only the top.
  while read -r p; do
    if grep -qxF "$p" "$W/imported" || [ ! -e "$p" ]; then continue; fi
    echo "$p $(nix-store -q --hash "$p")" >> "$W/hashes.tmp"
    nix-store --dump "$p" > "$W/nars/$(basename "$p").nar"
  done < "$W/outputs"
  mv "$W/hashes.tmp" "$W/hashes"
fi
say "done"
