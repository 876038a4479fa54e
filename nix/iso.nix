# The NixOS system whose config.system.build.isoImage is the image. Shared by flake.nix and
# default.nix so the flake and non-flake paths evaluate the very same modules: nixpkgs' own
# `lib.nixosSystem` is not used because it stamps the version from flake metadata, which the
# non-flake path lacks; the stamp is set here from the pin both paths agree on instead.
{
  nixpkgs, # path to the pinned nixpkgs source tree
  pin, # nix/sources.json's "nixpkgs" entry: rev, lastModified
  system ? "x86_64-linux",
  extraModules ? [ ],
}:

import (nixpkgs + "/nixos/lib/eval-config.nix") {
  # null: the platform comes from nixpkgs.hostPlatform below, never from builtins.currentSystem.
  system = null;
  modules = [
    ./profiles/iso.nix
    ./profiles/size-reduction.nix
    ./profiles/no-haskell.nix
    {
      nixpkgs.hostPlatform = system;
      nixpkgs.overlays = [ (import ./overlay.nix) ];
      # Same stamp as nixpkgs' flake would give: ".YYYYMMDD.<short rev>".
      system.nixos.revision = pin.rev;
      system.nixos.versionSuffix = ".${import ./lib/date.nix pin.lastModified}.${builtins.substring 0 7 pin.rev}";
    }
  ] ++ extraModules;
}
