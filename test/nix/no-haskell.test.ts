// nix/lib/no-haskell-check.nix (the flake's checks.x86_64-linux.no-haskell) must find GHC anywhere
// below the ISO's derivation without building or fetching anything. nixpkgs is unreachable here, so
// the graph is a toy one built of plain derivations, and runCommand is a plain derivation running
// the host's sh (real nix, real .drv files, sandbox on; the check script is the one the flake uses).
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { nix, REPO } from "./nixfiles";

function world(dir: string): string {
  const file = path.join(dir, "world.nix");
  fs.writeFileSync(
    file,
    `{ withGhc, nonce }:
let
  system = builtins.currentSystem;
  runCommand = name: env: script: derivation ({ inherit name system; builder = "/bin/sh"; args = [ "-c" script ]; PATH = "/usr/bin:/bin"; } // env);
  # never built: the check only reads their .drv files
  mk = name: deps: derivation { inherit name system; builder = "/bin/sh"; args = [ "-c" "exit 1 \${toString deps}" ]; };
  ghc = mk "ghc-9.6.6" [ (mk "ghc-9.6.6-src.tar.xz" [ ]) (mk "ghc-binary-9.2.4" [ ]) ];
  shellcheck = mk "ShellCheck-0.10.0" [ ghc ];
  script = mk "firewall-tool" (if withGhc then [ shellcheck ] else [ ]);
  iso = mk "nixos-messages.iso" [ (mk "system-path" [ script (mk "db-writer" [ ]) ]) (mk "initrd" [ script ]) ];
in
import ${REPO}/nix/lib/no-haskell-check.nix { inherit runCommand; target = iso; name = "no-haskell-\${nonce}"; }
`,
  );
  return file;
}

async function check(withGhc: boolean) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nix-no-haskell-"));
  try {
    const sandboxPaths = ["/bin", "/usr", "/lib", "/lib64"].filter((p) => fs.existsSync(p)).join(" ");
    const nonce = `${process.pid}-${Date.now()}`;
    return await nix("nix-build", [
      world(dir), "--no-out-link", "--arg", "withGhc", String(withGhc), "--argstr", "nonce", nonce,
      "--option", "substituters", "", "--option", "sandbox", "true", "--option", "extra-sandbox-paths", sandboxPaths,
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test("the no-haskell check fails on a graph with GHC three levels down, naming every GHC", async (t) => {
  const r = await check(true);
  t.not(r.code, 0, r.stderr);
  t.regex(r.stderr, /no-haskell: 3 of 9 derivations below \/nix\/store\/[0-9a-z]{32}-nixos-messages\.iso\.drv are GHC, the Haskell compiler/);
  for (const name of ["ghc-9.6.6", "ghc-9.6.6-src.tar.xz", "ghc-binary-9.2.4"]) {
    t.regex(r.stderr, new RegExp(`/nix/store/[0-9a-z]{32}-${name.replace(/\./g, "\\.")}\\.drv`), name);
  }
  t.notRegex(r.stderr, /ShellCheck-0\.10\.0\.drv\n/, "only GHC is reported, not every Haskell program");
});

test("the no-haskell check passes on the same graph without GHC, and builds nothing else", async (t) => {
  const r = await check(false);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /none of the 5 derivations below .*nixos-messages\.iso\.drv is GHC/);
  const out = r.stdout.trim();
  t.regex(out, /-no-haskell-[0-9]+-[0-9]+$/);
  t.regex(fs.readFileSync(out, "utf8"), /none of the 5 derivations/);
});
