# Cargo's vendor directory from the crate sources: one directory per crate and the checksum file
# cargo checks the package against Cargo.lock with (no per-file sums: the crate's hash covers them).
mkdir -p $out
echo "$crates" | tr ' ' '\n' | paste - - - | while read -r crate dir sum; do
  gunzip -c "$crate" | tar -x -f - -C $out  # the crate unpacks to <name>-<version>/
  printf '{"files":{},"package":"%s"}' "$sum" > $out/$dir/.cargo-checksum.json
done
