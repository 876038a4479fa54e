# Usage: sh no-haskell-check.sh DRV OUT
# Walks the derivation graph below DRV (.drv files reference the .drv files they depend on, and
# all of them are in the build's input closure) and fails listing every Haskell compiler found.
# Needs only sh, grep, sort, comm and xargs. Nothing in the graph is built or fetched.
set -eu
drv=$1
out=$2
store=$(dirname "$drv")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# GHC itself, its bootstrap binaries and source (ghc-9.6.6, ghc-binary-9.2.4, ghc-9.6.6-src...).
# Every Haskell program needs one of these to build, so finding none means no Haskell at all.
haskell='/[0-9a-z]\{32\}-ghc-\(binary-\)\{0,1\}[0-9][^/]*\.drv$'
store_drv="$store/[0-9a-z]\\{32\\}-[0-9A-Za-z+._?=-]*\\.drv"

printf '%s\n' "$drv" > "$work/frontier"
: > "$work/seen"
while [ -s "$work/frontier" ]; do
  sort -u "$work/frontier" | comm -23 - "$work/seen" > "$work/new"
  sort -u "$work/seen" "$work/new" -o "$work/seen"
  # store paths inside the new .drv files' ATerm text: their input derivations
  if [ -s "$work/new" ]; then
    xargs grep -oh "$store_drv" < "$work/new" > "$work/frontier" || true
  else
    : > "$work/frontier"
  fi
done

total=$(wc -l < "$work/seen")
if grep -e "$haskell" "$work/seen" > "$work/found"; then
  echo "no-haskell: $(wc -l < "$work/found") of $total derivations below $drv are GHC, the Haskell compiler:" >&2
  sed 's/^/  /' "$work/found" >&2
  exit 1
fi
echo "no-haskell: none of the $total derivations below $drv is GHC" | tee "$out"
