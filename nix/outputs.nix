# Everything the flake and default.nix expose, from one pinned nixpkgs source tree.
{
  nixpkgs, # path to nixpkgs (the flake input, or nix/sources.nix's fetchTarball)
  system ? "x86_64-linux",
  # The flake passes the revision flake.lock resolved to; it must be the one in sources.json.
  lockedRev ? null,
}:

let
  pin = (builtins.fromJSON (builtins.readFile ./sources.json)).nixpkgs;
  checked =
    if lockedRev != null && lockedRev != pin.rev then
      throw "flake.lock pins nixpkgs ${lockedRev} but nix/sources.json pins ${pin.rev}: update both (see docs/nix.md)"
    else
      nixpkgs;

  overlay = import ./overlay.nix;
  pkgs = import checked {
    inherit system;
    overlays = [ overlay ];
    # Explicit: never read ~/.config/nixpkgs or NIXPKGS_* from the environment.
    config = { };
  };
  nixos = import ./iso.nix {
    nixpkgs = checked;
    inherit pin system;
  };
  iso = nixos.config.system.build.isoImage;
in
{
  inherit
    pkgs
    overlay
    nixos
    iso
    ;
  inherit (pkgs) db-writer db-reader;
  module = import ./modules/messages.nix;
  integration-test = import ./tests/integration.nix { inherit pkgs; };
  no-haskell = import ./lib/no-haskell-check.nix {
    inherit (pkgs) runCommand;
    target = iso;
  };
}
