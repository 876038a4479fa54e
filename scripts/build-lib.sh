#!/usr/bin/env bash
# npm run build:lib (npm pack runs it): the library users' programs import, compiled into dist/
# (tsconfig.lib.json), with the data files its modules read beside them (pipeline/lib: host-tools.tsv,
# rebuild.sh). The steps are not compiled: the CLI runs them from pipeline/ as TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
npx tsc -p tsconfig.lib.json
for f in pipeline/lib/*; do
  [ -f "$f" ] && case "$f" in *.ts) ;; *) cp "$f" "dist/$f" ;; esac
done
