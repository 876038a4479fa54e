# apps/db-writer: C++20, CMake, Boost.Asio (header-only) and libpq found through pkg-config.
# Installed by the project's own `install(TARGETS db-writer RUNTIME DESTINATION bin)`.
{
  lib,
  stdenv,
  cmake,
  pkg-config,
  boost,
  postgresql,
  # nixpkgs grew a standalone libpq package in 2025; without it, postgresql's dev output has libpq.pc.
  libpq ? null,
}:

let
  root = ../../apps/db-writer;
in
stdenv.mkDerivation {
  pname = "db-writer";
  version = "0.1.0";

  # The app's directory minus a local build tree: what a developer built by hand never leaks in.
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.difference root (lib.fileset.maybeMissing (root + "/build"));
  };

  strictDeps = true;
  nativeBuildInputs = [
    cmake
    pkg-config
  ];
  buildInputs = [
    boost
    (if libpq != null then libpq else postgresql)
  ];

  cmakeFlags = [ "-DCMAKE_BUILD_TYPE=Release" ];

  # The writer's tests need a live PostgreSQL; they run in the project's test suite, and the
  # NixOS VM test (nix/tests/integration.nix) exercises this very binary end to end.
  doCheck = false;

  meta = {
    description = "Appends each newline-terminated line received over TCP as a row in PostgreSQL";
    license = lib.licenses.asl20;
    mainProgram = "db-writer";
    platforms = lib.platforms.linux;
  };
}
