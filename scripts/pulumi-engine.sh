#!/usr/bin/env bash
# Makes a Pulumi engine available and prints the directory to put first on PATH.
#
# If `pulumi` is already on PATH (the official CLI, or the `pulumi` npm package's), its directory is
# printed and nothing is built. Otherwise (CI, this machine: the CLI cannot be downloaded here) the
# engine is built from Go modules pinned in scripts/pulumi-engine/ (go.mod + go.sum):
#   - pulumi                  the real CLI, github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   - pulumi-language-nodejs  a minimal stand-in (scripts/pulumi-engine/cmd/...: why is written there)
#   - pulumi-resource-command a minimal stand-in for the command provider 1.2.1 (same)
# Binaries are cached in ${XDG_CACHE_HOME:-~/.cache}/secure-supply-chain/pulumi-<version>-<key>/bin
# and rebuilt only when the pinned module or the stand-ins change. The command provider is also
# installed into the Pulumi plugin cache (${PULUMI_HOME:-~/.pulumi}/plugins/resource-command-v1.2.1)
# unless a plugin is already there. The build takes 10-20 minutes on 2 cores; progress on stderr.
#
# usage: PATH="$(bash scripts/pulumi-engine.sh):$PATH"
#        SC_PULUMI_BUILD=1 forces the Go build even when a pulumi is on PATH.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mod=$here/pulumi-engine
say() { echo "pulumi-engine: $*" >&2; }

if [ -z "${SC_PULUMI_BUILD:-}" ] && existing=$(command -v pulumi 2>/dev/null); then
  dirname "$(realpath "$existing")"
  exit 0
fi

# The official Go tarball's place (setup.sh accepts it there), off PATH in a non-login shell.
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || { say "no pulumi on PATH and no Go toolchain to build one (scripts/setup.sh installs golang)"; exit 2; }
version=$(awk '$1 == "github.com/pulumi/pulumi/pkg/v3" { print $2 }' "$mod/go.mod")
[ -n "$version" ] || { say "cannot read the pulumi/pkg/v3 version from $mod/go.mod"; exit 2; }
command_version=1.2.1
key=$(cd "$mod" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/secure-supply-chain
dest=$cache/pulumi-$version-$key
bin=$dest/bin
mkdir -p "$cache"

install_plugin() {
  local plugins=${PULUMI_HOME:-$HOME/.pulumi}/plugins
  local dir=$plugins/resource-command-v$command_version
  if [ -e "$dir/pulumi-resource-command" ] && [ ! -e "$dir/.secure-supply-chain" ]; then
    return 0 # someone's own (official) plugin: leave it
  fi
  mkdir -p "$dir"
  cp "$bin/pulumi-resource-command" "$dir/.pulumi-resource-command.tmp"
  mv "$dir/.pulumi-resource-command.tmp" "$dir/pulumi-resource-command"
  echo "$bin" > "$dir/.secure-supply-chain"
  rm -f "$plugins/resource-command-v$command_version.partial"
}

# One builder at a time; a second caller waits for it and reuses the result.
exec 9>"$cache/pulumi-engine.lock"
flock 9
if [ ! -x "$bin/pulumi" ] || [ ! -x "$bin/pulumi-language-nodejs" ] || [ ! -x "$bin/pulumi-resource-command" ]; then
  tmp=$(mktemp -d "$cache/.build-XXXXXX")
  mkdir -p "$tmp/bin"
  trap 'rm -rf "$tmp"' EXIT
  export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
  # This version of the module is newer than the checksum database mirror here knows; go.sum pins it.
  export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/pulumi"
  cd "$mod"
  say "building the Pulumi CLI $version from Go modules (10-20 minutes on 2 cores)"
  go build -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$version" \
    -o "$tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  say "building the nodejs language host and the command provider stand-ins"
  go build -ldflags "-s -w -X main.Version=${version#v}" -o "$tmp/bin/pulumi-language-nodejs" ./cmd/pulumi-language-nodejs
  go build -ldflags "-s -w -X main.Version=$command_version" -o "$tmp/bin/pulumi-resource-command" ./cmd/pulumi-resource-command
  rm -rf "$dest"
  mv "$tmp" "$dest"
  trap - EXIT
  # Older builds of this cache are superseded.
  for old in "$cache"/pulumi-v*; do [ "$old" = "$dest" ] || rm -rf "$old"; done
  say "built into $bin"
fi
install_plugin
echo "$bin"
