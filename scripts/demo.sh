#!/usr/bin/env bash
# The main job, on the hermetic demo world: `pulumi up` on the demo stack reconciles build → closure
# → isolated offline rebuild → verify, and the boot test, then prints the stack's outputs.
# Local state (./.pulumi), no login; the demo stack's secrets passphrase is empty (other stacks: yours, else empty).
# No `pulumi` on PATH? scripts/pulumi-engine.sh builds one from Go modules first (10-20 minutes once).
# Extra arguments go to `pulumi up` (e.g. --diff, --skip-preview).
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh machine needs only this script: host tools, npm packages, then the engine.
bash scripts/setup.sh >&2
[ -d node_modules/@pulumi/pulumi ] || npm ci --no-audit --no-fund >&2
PATH="$(bash scripts/pulumi-engine.sh):$PATH"
export PATH
export PULUMI_SKIP_UPDATE_CHECK=true
# The engine built here installs its command provider into the plugin cache: no warning about PATH.
export PULUMI_IGNORE_AMBIENT_PLUGINS=true
# Pulumi.yaml points the state at ./.pulumi; the file backend needs the directory.
[ -n "${PULUMI_BACKEND_URL:-}" ] || mkdir -p .pulumi
stack=${SC_STACK:-demo}
# The committed encryptionsalt of stacks/Pulumi.demo.yaml and Pulumi.demo-audit.yaml belongs to the
# empty passphrase: a passphrase set in the caller's environment would fail there with "incorrect passphrase".
if [ "$stack" = demo ] || [ "$stack" = demo-audit ]; then
  export PULUMI_CONFIG_PASSPHRASE=""
else
  export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
fi
pulumi stack select --create "$stack" --non-interactive >&2
pulumi up --stack "$stack" --yes --non-interactive "$@"
pulumi stack output --stack "$stack" --json
