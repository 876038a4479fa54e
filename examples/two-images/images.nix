# This project's images: both from the hermetic demo world generated into ./world
# (`npx supply-chain demo-world --full world`), which stands in for nixpkgs where it is unreachable.
let
  world = import ./world/default.nix;
in
{
  # Two busybox services mimicking a writer and a reader: seconds to build and boot.
  small = world.image;
  # db-writer and db-reader compiled in the Nix sandbox, on PostgreSQL.
  system = world.system;
}
