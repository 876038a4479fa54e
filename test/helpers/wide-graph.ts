// A wide derivation graph for tests and benchmarks at scale: `leaves` independent derivations under one
// root, built by the demo world's busybox (so they build offline and in Nix's sandbox).

export interface WideGraph {
  /** The demo world's default.nix, relative to the file written (`./default.nix`, `./world/default.nix`). */
  world: string;
  leaves: number;
  /** Each leaf's shell command, Nix-interpolated: `${sh}` is busybox, `${name}` the leaf's name; it writes $out. */
  leaf: string;
  /** The default of `salt`, which every leaf's command sees as `${salt}` (new derivations per salt). */
  salt?: string;
}

/** The Nix file: a function of `salt` (default `g.salt`, or ""), attribute `wide`. */
export function wideGraphNix(g: WideGraph): string {
  return `{ salt ? ${JSON.stringify(g.salt ?? "")} }:
let
  world = import ${g.world};
  sh = "\${world.busybox}/bin/busybox";
  leaf = i: let name = "leaf-\${toString i}"; in derivation {
    inherit name;
    system = "x86_64-linux";
    builder = sh;
    args = [ "sh" "-c" "${g.leaf}" ];
  };
in {
  wide = derivation {
    name = "wide-root";
    system = "x86_64-linux";
    builder = sh;
    args = [ "sh" "-c" "echo \${toString (builtins.genList leaf ${g.leaves})} > $out" ];
  };
}
`;
}
