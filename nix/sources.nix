# The non-flake pin of nixpkgs: nix/sources.json fetched with builtins.fetchTarball.
# `name = "source"` is deliberate: a fixed-output path depends only on its hash and name, so this is
# the very store path the flake input gets from flake.lock (same NAR hash, same name "source").
# Fetching through either pin fills the store for the other.
let
  pins = builtins.fromJSON (builtins.readFile ./sources.json);
in
{
  inherit pins;
  nixpkgs = builtins.fetchTarball {
    name = "source";
    inherit (pins.nixpkgs) url sha256;
  };
}
