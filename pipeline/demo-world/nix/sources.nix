# The world's evaluation-time pins (niv's nix/sources.json layout), fetched as nixpkgs is pinned:
# builtins.fetchTarball with the sha256 of the unpacked tree. Written by `supply-chain demo-world`.
let
  pins = builtins.fromJSON (builtins.readFile ./sources.json);
in
builtins.mapAttrs (name: pin: builtins.fetchTarball { name = "source"; inherit (pin) url sha256; }) pins
