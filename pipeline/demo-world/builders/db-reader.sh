# db-reader (apps/db-reader, Rust) built by cargo from the vendored crates, offline and locked to
# Cargo.lock, linked by the pinned toolchain's cc (GNU ld: the bundled rust-lld is not shipped).
# Reproducible: paths remapped, SOURCE_DATE_EPOCH set, no incremental state.
cp -r $src build
chmod -R u+w build
cd build
export HOME=$TMPDIR CARGO_HOME=$TMPDIR/cargo-home PATH=$rust/bin:$PATH RUSTC=$rust/bin/rustc
mkdir -p $CARGO_HOME
cat > $CARGO_HOME/config.toml <<TOML
[source.crates-io]
replace-with = "vendored"
[source.vendored]
directory = "$vendor"
TOML
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=$toolchain/bin/cc
export RUSTFLAGS="-C linker-features=-lld --remap-path-prefix=$vendor=/vendor --remap-path-prefix=$PWD=/db-reader --remap-path-prefix=$CARGO_HOME=/cargo"
cargo build --offline --locked --release -j ${NIX_BUILD_CORES:-1}
mkdir -p $out/bin
cp target/release/db_reader $out/bin/db_reader
$out/bin/db_reader --help > /dev/null
