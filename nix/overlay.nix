# Adds the two services of the image to nixpkgs: pkgs.db-writer and pkgs.db-reader.
final: _prev: {
  db-writer = final.callPackage ./pkgs/db-writer.nix { };
  db-reader = final.callPackage ./pkgs/db-reader.nix { };
}
