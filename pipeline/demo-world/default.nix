# The hermetic demo world (world.nix), its evaluation-time library pinned in nix/sources.json.
# nix-build default.nix --option sandbox true -A image
import ./world.nix { demoLib = import (import ./nix/sources.nix).demo-lib; }
