// Every .nix file of the repository must parse (nix-instantiate --parse also resolves variables,
// so an undefined name fails here too). nixpkgs is unreachable on this machine, so parsing is how
// far nix/ can be checked without it; see docs/nix.md.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parseNixFiles, repoNixFiles } from "./nixfiles";

test("every .nix file in the repository parses with nix-instantiate --parse", async (t) => {
  const files = await repoNixFiles();
  for (const own of ["flake.nix", "default.nix", "nix/default.nix", "nix/modules/messages.nix", "nix/tests/integration.nix"]) {
    t.true(files.includes(own), `${own} is not among the files checked: ${files.join(" ")}`);
  }
  // The failures themselves are the assertion: an empty list, or every file and its error in the diff.
  const failures = await parseNixFiles(files);
  t.deepEqual(failures.map((f) => `${f.file}: ${f.error}`), []);
  t.log(`${files.length} files parse`);
});

test("a broken file fails, named, next to good ones (syntax error and undefined variable)", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nix-parse-"));
  try {
    fs.writeFileSync(path.join(dir, "good.nix"), "{ x ? 1 }: { y = x + 1; }\n");
    fs.writeFileSync(path.join(dir, "syntax.nix"), "{ services.messages = { enable = true; }\n");
    fs.writeFileSync(path.join(dir, "undefined.nix"), "{ lib, ... }: { port = lib.mkDefault prot; }\n");
    const failures = await parseNixFiles(["good.nix", "syntax.nix", "undefined.nix"], dir);
    t.deepEqual(failures.map((f) => f.file), ["syntax.nix", "undefined.nix"]);
    t.regex(failures[0].error, /syntax error/);
    t.regex(failures[1].error, /undefined variable 'prot'/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
