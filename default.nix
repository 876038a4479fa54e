# `nix-build` at the repository root builds the ISO; see nix/default.nix and docs/nix.md.
import ./nix/default.nix
