# Non-flake entry point, pinned by nix/sources.json (fetched with builtins.fetchTarball):
#   nix-build nix/default.nix                          # the ISO only: result/iso/*.iso
#   nix-build nix/default.nix -A iso                   # the same
#   nix-build nix/default.nix -A packages.db-writer    # or packages.db-reader
#   nix-build nix/default.nix -A checks.integration-test   # or checks.no-haskell
# Only `iso` is a derivation at the top level, so a bare nix-build builds nothing else; `internals`
# (the nixpkgs set and the NixOS evaluation) is for nix repl and the pipeline, never built whole.
{
  nixpkgs ? (import ./sources.nix).nixpkgs,
  system ? "x86_64-linux",
}:

let
  out = import ./outputs.nix { inherit nixpkgs system; };
in
{
  inherit (out) iso;
  packages = {
    inherit (out) iso db-writer db-reader;
  };
  checks = {
    inherit (out) integration-test no-haskell;
  };
  internals = {
    inherit (out) pkgs nixos;
  };
}
