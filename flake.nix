{
  # Lives at the repository root, not in nix/: a flake only sees the files under its own
  # directory when it is copied as a path, and the packages are built from ../apps. The work is
  # all in nix/ (outputs.nix), shared with the non-flake default.nix.
  description = "secure-supply-chain: the NixOS image running services.messages, and its packages";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      out = import ./nix/outputs.nix {
        inherit system;
        nixpkgs = nixpkgs.outPath;
        lockedRev = nixpkgs.rev;
      };
    in
    {
      packages.${system} = {
        inherit (out) iso db-writer db-reader;
        default = out.iso;
      };
      checks.${system} = {
        integration-test = out.integration-test;
        no-haskell = out.no-haskell;
      };
      nixosModules = {
        messages = out.module;
        default = out.module;
      };
      overlays.default = out.overlay;
    };
}
