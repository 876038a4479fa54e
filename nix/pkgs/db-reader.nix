# apps/db-reader: Rust (axum, tokio-postgres). `cargoLock.lockFile` makes nixpkgs turn every crate
# in Cargo.lock into its own fixed-output fetch (hash = the lock's checksum), so each crate is a
# separate, individually verifiable source in the image's closure, not one opaque vendor tarball.
{
  lib,
  rustPlatform,
}:

let
  root = ../../apps/db-reader;
  manifest = lib.importTOML (root + "/Cargo.toml");
in
rustPlatform.buildRustPackage {
  pname = "db-reader";
  inherit (manifest.package) version;

  # The crate minus cargo's local target/ directory.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.difference root (lib.fileset.maybeMissing (root + "/target"));
  };

  cargoLock.lockFile = ../../apps/db-reader/Cargo.lock;

  # Unit tests only (format.rs); the database-backed tests live in the project's test suite.
  doCheck = true;

  meta = {
    description = "Serves the rows written by db-writer over HTTP, newest first";
    license = lib.licenses.asl20;
    mainProgram = "db_reader";
    platforms = lib.platforms.linux;
  };
}
