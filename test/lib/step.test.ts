// The step contract's exit codes (docs/contracts.md), on the real CLI where a real step can be made
// to hit each case, and on runStep itself for a crash (no real step crashes on purpose).
import test from "ava";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { tolerateVerdict } from "../../pipeline/components/step-command";

const ROOT = path.resolve(__dirname, "..", "..");
const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { encoding: "utf8" });
const lastLine = (s: string) => s.trim().split("\n").pop()!;

/** Runs runStep on a step defined inline (module text), in a child process of its own. */
function runInline(body: string) {
  const script = `const { runStep, CheckFailed } = require(${JSON.stringify(path.join(ROOT, "pipeline/lib/step.ts"))});
    runStep({ name: "probe", summary: "", options: {}, async run() { ${body} } }, []).then((c) => { process.exitCode = c; });`;
  return spawnSync(process.execPath, ["-r", "sucrase/register", "-e", script], { cwd: ROOT, encoding: "utf8" });
}

test("a crash is exit 3 (internal error), never 1: stack on stderr, one line last, nothing on stdout", (t) => {
  const r = runInline(`const x = undefined; return x.field;`);
  t.is(r.status, 3);
  t.is(r.stdout, "");
  t.regex(r.stderr, /TypeError/);
  t.regex(lastLine(r.stderr), /^supply-chain probe: internal error: Cannot read properties of undefined/);
});

test("a failed check without a verdict is exit 1 with nothing on stdout; with one, the verdict is printed", (t) => {
  const bare = runInline(`throw new CheckFailed("no");`);
  t.is(bare.status, 1);
  t.is(bare.stdout, "");
  const verdict = runInline(`throw new CheckFailed("no", { ok: false });`);
  t.is(verdict.status, 1);
  t.deepEqual(JSON.parse(verdict.stdout), { ok: false });
});

test("a file system refusal is exit 2 with one line naming the call and path (ENAMETOOLONG on a long --out)", (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "step-exit-"));
  try {
    const long = path.join(tmp, "x".repeat(300));
    const r = cli("demo-world", long, "--no-fetch");
    t.is(r.status, 2, r.stderr);
    t.is(r.stdout, "");
    t.is(r.stderr.trim().split("\n").length, 1, r.stderr);
    t.regex(r.stderr, /^supply-chain demo-world: .*name too long \(ENAMETOOLONG, \w+ .*x{300}/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("a crafted rebuild.json (paths: [null]) is exit 2 naming the entry, not a crash", (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "step-exit-"));
  try {
    const f = path.join(tmp, "rebuild.json");
    fs.writeFileSync(f, JSON.stringify({ out: tmp, paths: [null], runId: "r" }));
    const r = cli("verify", "--file", f, "--attribute", "x", "--rebuilt", f);
    t.is(r.status, 2, r.stderr);
    t.is(r.stderr.trim(), `supply-chain verify: ${f}: paths[0] is null, not {path, narHash, nar} of a rebuilt store path`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test("an option value starting with a dash reaches the step, whose check names it (--top -3)", (t) => {
  const r = cli("closure", "--file", "x.nix", "--attribute", "a", "--out", "/tmp/none", "--top", "-3");
  t.is(r.status, 2);
  t.is(r.stderr.trim(), "supply-chain closure: --top must be a non-negative integer, got '-3'");
  // An option name after an option is still an option: the missing value is the parser's to report.
  const missing = cli("closure", "--file", "x.nix", "--attribute", "a", "--top", "--out", "/tmp/none");
  t.is(missing.status, 2);
  t.regex(missing.stderr, /--top/);
});

test("policy warn's shell tolerates only exit 1 with a JSON verdict on stdout; stdout is passed on", (t) => {
  const sh = (body: string) => spawnSync("sh", ["-c", tolerateVerdict(`sh -c '${body}'`)], { encoding: "utf8" });
  const verdict = sh(`echo "{\\"ok\\": false}"; exit 1`);
  t.is(verdict.status, 0);
  t.is(verdict.stdout, '{"ok": false}\n');
  t.is(sh(`echo "{}"; exit 0`).status, 0);
  t.not(sh(`exit 1`).status, 0, "exit 1 with no verdict");
  t.not(sh(`echo "Error: boom"; exit 1`).status, 0, "exit 1 with something that is not JSON");
  t.not(sh(`echo "{}"; exit 2`).status, 0, "bad input");
  t.not(sh(`echo "{}"; exit 3`).status, 0, "internal error");
});
