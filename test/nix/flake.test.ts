// The flake's outputs have the names the project promises (packages iso/default/db-writer/db-reader,
// checks integration-test/no-haskell, nixosModules.messages, overlays.default). Evaluated by real
// nix with a stand-in nixpkgs input that is never read (mocked: nixpkgs cannot be fetched here),
// which also proves listing the outputs forces nothing from nixpkgs.
import test from "ava";
import { nix, readPins } from "./nixfiles";

const evalJson = async (expr: string) => {
  const r = await nix("nix-instantiate", ["--eval", "--strict", "--json", "-E", expr]);
  return { ...r, value: r.code === 0 ? (JSON.parse(r.stdout) as unknown) : undefined };
};

const outputs = (rev: string) =>
  `let o = (import ./flake.nix).outputs { self = o; nixpkgs = { outPath = "/nonexistent-nixpkgs"; rev = "${rev}"; }; }; in o`;

test("flake outputs: the promised names, a module function and an overlay function", async (t) => {
  const rev = readPins().sources.nixpkgs.rev;
  const r = await evalJson(`let o = ${outputs(rev)}; in {
    packages = builtins.attrNames o.packages.x86_64-linux;
    checks = builtins.attrNames o.checks.x86_64-linux;
    modules = builtins.attrNames o.nixosModules;
    module = builtins.isFunction o.nixosModules.messages;
    overlay = builtins.isFunction o.overlays.default;
    overlayAdds = builtins.attrNames (o.overlays.default { callPackage = f: _: toString f; } { });
  }`);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.value, {
    packages: ["db-reader", "db-writer", "default", "iso"],
    checks: ["integration-test", "no-haskell"],
    modules: ["default", "messages"],
    module: true,
    overlay: true,
    overlayAdds: ["db-reader", "db-writer"],
  });
});

test("flake outputs: building anything with a flake.lock that disagrees with nix/sources.json is refused", async (t) => {
  const r = await evalJson(`(${outputs("1111111111111111111111111111111111111111")}).packages.x86_64-linux.iso.drvPath`);
  t.not(r.code, 0);
  t.regex(r.stderr, /flake\.lock pins nixpkgs 1{40} but nix\/sources\.json pins/);
});

test("flake.nix and default.nix take the same route: nix/outputs.nix", async (t) => {
  const r = await evalJson(`{
    flake = builtins.readFile ./flake.nix;
    root = builtins.readFile ./default.nix;
    nonflake = builtins.readFile ./nix/default.nix;
  }`);
  t.is(r.code, 0, r.stderr);
  const v = r.value as { flake: string; root: string; nonflake: string };
  t.regex(v.flake, /import \.\/nix\/outputs\.nix/);
  t.regex(v.root, /import \.\/nix\/default\.nix/);
  t.regex(v.nonflake, /import \.\/outputs\.nix/);
  t.regex(v.nonflake, /\(import \.\/sources\.nix\)\.nixpkgs/);
});

test("default.nix: only the ISO at the top level; packages and checks one level down", async (t) => {
  const r = await evalJson(`let d = import ./default.nix { nixpkgs = "/nonexistent-nixpkgs"; }; in {
    top = builtins.attrNames d;
    packages = builtins.attrNames d.packages;
    checks = builtins.attrNames d.checks;
    recurse = d.packages ? recurseForDerivations || d.checks ? recurseForDerivations || d.internals ? recurseForDerivations;
  }`);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(r.value, {
    top: ["checks", "internals", "iso", "packages"],
    packages: ["db-reader", "db-writer", "iso"],
    checks: ["integration-test", "no-haskell"],
    recurse: false,
  });
});
