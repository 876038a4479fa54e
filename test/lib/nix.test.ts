// The Nix adapter's target: the options every step shares, the one validator, the one error formatter
// (stderr samples recorded from Nix 2.8.0, the host's). No Nix is run here.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { describeTarget, evaluationError, nixError, TARGET_OPTIONS, targetFrom, validateTarget } from "../../pipeline/lib/nix";
import { InputError } from "../../pipeline/lib/step";
import { step as audit } from "../../pipeline/steps/audit";
import { step as build } from "../../pipeline/steps/build";
import { step as checkClosure } from "../../pipeline/steps/check-closure";
import { step as closure } from "../../pipeline/steps/closure";
import { step as rebuild } from "../../pipeline/steps/rebuild";
import { step as verify } from "../../pipeline/steps/verify";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nix-target-"));
const file = path.join(dir, "default.nix");
fs.writeFileSync(file, "{ }\n");
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

/** The InputError's message `f` throws. */
function message(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return e instanceof InputError ? e.message : `not an InputError: ${e}`;
  }
  return "no error";
}

test("every step that takes a target declares the same --file/--attribute/--flake", (t) => {
  for (const s of [build, closure, checkClosure, rebuild, verify, audit]) {
    for (const name of ["file", "attribute", "flake"] as const) t.is(s.options[name], TARGET_OPTIONS[name], `${s.name} --${name}`);
  }
});

test("targetFrom: a file with its attribute, a flake REF#ATTR, or a flake REF with --attribute (joined)", (t) => {
  t.deepEqual(targetFrom({ file, attribute: "image" }), { file, attribute: "image" });
  t.deepEqual(targetFrom({ file: dir, attribute: "image" }), { file: dir, attribute: "image" });
  t.deepEqual(targetFrom({ flake: "path:/src#image" }), { flake: "path:/src#image" });
  t.deepEqual(targetFrom({ flake: "path:/src", attribute: "image" }), { flake: "path:/src#image" });
});

test("targetFrom refuses every other combination, naming the options", (t) => {
  t.is(message(() => targetFrom({})), "missing --file (or --flake)");
  t.is(message(() => targetFrom({ attribute: "image" })), "missing --file (or --flake)");
  t.is(message(() => targetFrom({ file })), `missing --attribute for ${file}`);
  t.is(message(() => targetFrom({ flake: "path:/src" })), "missing --attribute for --flake path:/src (or --flake path:/src#ATTR)");
  t.is(message(() => targetFrom({ flake: "path:/src#image", attribute: "iso" })), "--flake path:/src#image already names an attribute: drop --attribute iso");
  t.is(message(() => targetFrom({ flake: "path:/src#image", file, attribute: "image" })), "give either --flake or --file with --attribute, not both");
  t.is(message(() => targetFrom({ flake: "path:/src", file, attribute: "image" })), "give either --flake or --file with --attribute, not both");
  t.is(message(() => targetFrom({ file: "/nonexistent/world.nix", attribute: "image" })), "Nix file not found: /nonexistent/world.nix");
  const empty = path.join(dir, "empty");
  fs.mkdirSync(empty);
  t.is(message(() => targetFrom({ file: empty, attribute: "image" })), `${empty} is a directory without default.nix`);
});

test("validateTarget (for library callers) keeps only the target's fields", (t) => {
  const withExtra = { file, attribute: "image", closure: "/c" };
  t.deepEqual(validateTarget(withExtra), { file, attribute: "image" });
  t.deepEqual(validateTarget({ flake: "path:/src#image" }), { flake: "path:/src#image" });
});

test("describeTarget: one wording for both kinds", (t) => {
  t.is(describeTarget({ file: "/w/default.nix", attribute: "image" }), "attribute 'image' of /w/default.nix");
  t.is(describeTarget({ flake: "path:/w#image" }), "flake path:/w#image");
});

const fileTarget = { file: "/w/ok.nix", attribute: "a.c" };
const flakeTarget = { flake: "path:/w#nope" };

test("evaluationError: an unknown attribute names the selection path, the file and the attribute not found", (t) => {
  const e = evaluationError(fileTarget, "error: attribute 'c' in selection path 'a.c' not found\n       Did you mean b?\n", 1);
  t.is(e.message, "unknown attribute 'a.c' in /w/ok.nix ('c' not found)");
  const f = evaluationError(
    flakeTarget,
    "error: flake 'path:/w' does not provide attribute 'packages.x86_64-linux.nope', 'legacyPackages.x86_64-linux.nope' or 'nope'\n",
    1,
  );
  t.is(f.message, "unknown attribute 'nope' in flake path:/w (tried 'packages.x86_64-linux.nope')");
});

test("evaluationError: not a derivation, from nix-instantiate and from a flake", (t) => {
  t.is(evaluationError({ file: "/w/ok.nix", attribute: "x" }, "error: expression does not evaluate to a derivation (or a set or list of those)\n").message, "attribute 'x' of /w/ok.nix is not a derivation");
  t.is(evaluationError({ flake: "path:/w#x" }, "error: flake output attribute 'x' is not a derivation\n").message, "flake path:/w#x is not a derivation");
});

test("evaluationError: any other error is Nix's first error line and where it is", (t) => {
  const stderr = "error: syntax error, unexpected ';'\n\n       at /w/bad.nix:2:7:\n\n            1| {\n            2|   x = ;\n             |       ^\n";
  t.is(evaluationError({ file: "/w/bad.nix", attribute: "x" }, stderr, 1).message, "cannot evaluate attribute 'x' of /w/bad.nix: syntax error, unexpected ';' (at /w/bad.nix:2:7)");
});

test("nixError: the first error with a message (a bare 'error:' header is skipped), else the last line, else the exit code", (t) => {
  t.is(nixError("warning: x\nerror:\n       … while evaluating\n\n       error: undefined variable 'q'\n", 1), "undefined variable 'q'");
  t.is(nixError("something went wrong\nat the end\n", 1), "at the end");
  t.is(nixError("", 101), "exit 101");
});
