// The auditor's offline tamper check on real closures of a real Nix world: one flipped byte in one
// source, a missing source, an extra path, a truncated stream — each rejected, naming the source.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkClosure, checkExportAgainst, describeFailure, expectedSources, preImportCheck } from "../../pipeline/lib/closure-check";
import { describeSystemError } from "../../pipeline/lib/step";
import { collectSources } from "../../pipeline/lib/derivation";
import { readDerivationGraph } from "../../pipeline/lib/drv-file";
import { ByteReader, parseExport, ExportedPath } from "../../pipeline/lib/nar";
import { cli, makeWorld, OFFLINE_ENV, removeWorld, World } from "../fixtures/closure-world/world";

let world: World;
let out: string;
let closure: string;
let manifest: any;
let exported: ExportedPath[];

test.before(async () => {
  world = makeWorld("check-closure");
  out = fs.mkdtempSync(path.join(os.tmpdir(), "check-closure-"));
  const r = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out]);
  if (r.code !== 0) throw new Error(`closure failed: ${r.stderr}`);
  closure = r.json.closureFile;
  manifest = JSON.parse(fs.readFileSync(r.json.manifest, "utf8"));
  exported = await parseExport(new ByteReader(fs.readFileSync(closure)), { entries: true });
});
test.after.always(() => {
  removeWorld(world);
  fs.rmSync(out, { recursive: true, force: true });
});

/** Copy of the closure with one byte flipped inside the contents of a file of `storePath`. */
function flipOneByte(storePath: string, file = ""): string {
  const e = exported.find((x) => x.path === storePath)!;
  const entry = e.entries!.find((x) => x.type === "regular" && x.path === file && x.size > 0) as any;
  const bytes = fs.readFileSync(closure);
  const at = entry.contentsOffset + Math.floor(entry.size / 2);
  bytes[at] ^= 0x01;
  const copy = path.join(out, `tampered-${path.basename(storePath)}-${Math.random().toString(36).slice(2)}.closure`);
  fs.writeFileSync(copy, bytes);
  return copy;
}

const check = (file: string) => cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", file]);
const byName = (suffix: string) => manifest.sources.find((s: any) => s.path.endsWith(suffix)) ?? manifest.evalPaths.find((s: any) => s.path.endsWith(suffix));

test("check-closure accepts the untouched closure", (t) => {
  const r = check(closure);
  t.is(r.code, 0, r.stderr);
  t.true(r.json.ok);
  t.is(r.json.checked, manifest.sources.length + manifest.evalPaths.length);
  t.deepEqual([r.json.tampered, r.json.missing, r.json.extra, r.json.unverifiable], [[], [], [], []]);
});

test("check-closure: one flipped byte in a flat fixed-output source -> exit 1 naming that source and its drv", (t) => {
  const src = byName("-greeting.txt");
  const r = check(flipOneByte(src.path));
  t.is(r.code, 1);
  t.false(r.json.ok);
  t.is(r.json.tampered.length, 1);
  t.like(r.json.tampered[0], { path: src.path, drv: src.drv, mode: "flat", algo: "sha256", expected: src.hash.nix32 });
  t.not(r.json.tampered[0].actual, r.json.tampered[0].expected);
  t.regex(r.stderr, new RegExp(`tampered.*${src.path}`));
});

test("check-closure: one flipped byte deep inside a recursive (NAR) source -> named", (t) => {
  const src = byName("-busybox");
  const r = check(flipOneByte(src.path, "bin/busybox"));
  t.is(r.code, 1);
  t.deepEqual(r.json.tampered.map((x: any) => [x.path, x.drv, x.mode]), [[src.path, src.drv, "recursive"]]);
});

test("check-closure: one flipped byte in an evaluation-time source -> its recomputed store path differs, named", (t) => {
  const src = byName("-local-note.txt");
  const r = check(flipOneByte(src.path));
  t.is(r.code, 1);
  t.is(r.json.tampered.length, 1);
  t.like(r.json.tampered[0], { path: src.path, drv: src.neededBy, mode: "source-path", expected: src.path });
  t.not(r.json.tampered[0].actual, src.path);
});

test("check-closure: a closure missing one source -> exit 1 naming the missing path and drv", (t) => {
  const src = byName("-greeting.txt");
  const keep = [...manifest.sources, ...manifest.evalPaths].map((s: any) => s.path).filter((p: string) => p !== src.path);
  const partial = path.join(out, "missing-one.closure");
  fs.writeFileSync(partial, execFileSync("nix-store", ["--export", ...keep], { env: OFFLINE_ENV, maxBuffer: 1 << 28 }));
  const r = check(partial);
  t.is(r.code, 1);
  t.deepEqual(r.json.missing, [{ path: src.path, drv: src.drv }]);
  t.deepEqual(r.json.tampered, []);
  t.regex(r.stderr, new RegExp(`missing.*${src.path}`));
});

test("check-closure: an extra path (could pre-empt a build) and a truncated stream are rejected", (t) => {
  const extraPath = execFileSync("nix-store", ["--add", path.join(world.dir, "lock.json")]).toString().trim();
  const all = [...manifest.sources, ...manifest.evalPaths].map((s: any) => s.path);
  const withExtra = path.join(out, "extra.closure");
  fs.writeFileSync(withExtra, execFileSync("nix-store", ["--export", ...all, extraPath], { env: OFFLINE_ENV, maxBuffer: 1 << 28 }));
  const r = check(withExtra);
  t.is(r.code, 1);
  t.deepEqual(r.json.extra, [extraPath]);
  const truncated = path.join(out, "truncated.closure");
  fs.writeFileSync(truncated, fs.readFileSync(closure).subarray(0, 5000));
  const tr = check(truncated);
  t.is(tr.code, 1);
  t.regex(tr.json.error, /not a valid nix-store --export stream: truncated/);
  t.true(tr.json.missing.length > 0);
});

test("a closure this machine cannot read throws its read error naming the file (exit 2 in a step), not a verdict on its bytes", async (t) => {
  // A directory opens but fails every read (EISDIR): as EIO from a failing disk would, after the steps' own checks.
  const dir = path.join(out, "unreadable.closure");
  fs.mkdirSync(dir, { recursive: true });
  for (const check of [() => checkExportAgainst(dir, new Map(), "/nix/store"), () => preImportCheck(dir, [], "/nix/store")]) {
    const e = await t.throwsAsync(check());
    t.is((e as NodeJS.ErrnoException).code, "EISDIR");
    t.is(describeSystemError(e), `illegal operation on a directory (EISDIR, read ${dir})`);
  }
});

test("checkClosure() (library) returns the verdict without throwing; bad input throws", async (t) => {
  const src = byName("-greeting.txt");
  const r = await checkClosure({ file: world.file, attribute: world.attribute, closure: flipOneByte(src.path) });
  t.false(r.ok);
  t.is(r.tampered[0].path, src.path);
  await t.throwsAsync(checkClosure({ file: world.file, attribute: world.attribute, closure: "/nonexistent.closure" }), { message: /closure file not found/ });
  const bad = check("/nonexistent.closure");
  t.is(bad.code, 2);
  const attr = cli(["check-closure", "--file", world.file, "--attribute", "nope", "--closure", closure]);
  t.is(attr.code, 2);
  t.regex(attr.stderr, /unknown attribute 'nope'/);
});

test("a source declared with git hashing (altered expectation: Nix 2.8 cannot write one) is unverifiable and never accepted", async (t) => {
  const graph = readDerivationGraph(manifest.target.drvPath);
  const want = expectedSources(graph, collectSources(graph, manifest.target.drvPath));
  const src = byName("-greeting.txt");
  const declared = want.get(src.path)!;
  want.set(src.path, { ...declared, fixed: { mode: "git", algo: "sha1", hex: "0".repeat(40) } });
  const r = await checkExportAgainst(closure, want, graph.storeDir);
  t.false(r.ok);
  t.deepEqual(r.unverifiable, [{ path: src.path, drv: src.drv, mode: "git", algo: "sha1" }]);
  t.deepEqual([r.tampered, r.missing, r.extra], [[], [], []]);
  t.regex(describeFailure(r), /1 source\(s\) with a hash this check cannot recompute \(git hashing\): .*-greeting\.txt/);
});

test("check-closure --stage: the private read-only copy is what is checked (a flipped byte in the copy's source is named) and what is kept for the import; a wrong --closure-sha256 is refused", async (t) => {
  const stage = path.join(out, "stage");
  const { sha256File } = await import("../../pipeline/lib/files");
  const digest = await sha256File(closure);
  const r = cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", closure, "--stage", stage, "--closure-sha256", digest]);
  t.is(r.code, 0, r.stderr);
  t.is(r.json.staged, path.join(stage, "source-export.closure"));
  t.is(r.json.closureSha256, digest);
  t.is(fs.statSync(stage).mode & 0o777, 0o700);
  t.is(fs.statSync(r.json.staged).mode & 0o777, 0o400);
  t.deepEqual(fs.readFileSync(r.json.staged), fs.readFileSync(closure));

  const flipped = flipOneByte(byName("-greeting.txt").path);
  const bad = cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", flipped, "--stage", stage]);
  t.is(bad.code, 1);
  t.is(bad.json.tampered.length, 1);
  t.false(fs.existsSync(stage), "a rejected copy is not left for an import");

  const pinned = cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", flipped, "--stage", stage, "--closure-sha256", digest]);
  t.is(pinned.code, 1);
  t.true(pinned.json.refused);
  t.regex(pinned.stderr, /has SHA-256 [0-9a-f]{64}, expected [0-9a-f]{64} \(the closure step's digest\)/);
  t.false(fs.existsSync(stage));
});

test("re-hashed on two worker threads: a flipped byte in any source of a multi-source closure is named by its path, whichever worker hashed it", async (t) => {
  const graph = readDerivationGraph(manifest.target.drvPath);
  const want = expectedSources(graph, collectSources(graph, manifest.target.drvPath));
  const check2 = (file: string) => checkExportAgainst(file, want, graph.storeDir, [], { workers: 2 });
  const clean = await check2(closure);
  t.true(clean.ok, describeFailure(clean));
  const sources = exported.filter((e) => e.entries!.some((x) => x.type === "regular" && x.size > 0));
  t.true(sources.length >= 3, `${sources.length} sources with file contents`);
  for (const e of sources) {
    const file = (e.entries!.find((x) => x.type === "regular" && x.size > 0) as any).path;
    const r = await check2(flipOneByte(e.path, file));
    t.deepEqual(r.tampered.map((x) => x.path), [e.path], `a byte of ${e.path}/${file}`);
    t.deepEqual([r.missing, r.extra, r.error], [[], [], undefined]);
  }
  // Two at once, at both ends of the stream (the biggest-first order gives them to different batches).
  const [a, b] = [sources[0], sources[sources.length - 1]];
  const both = flipOneByte(a.path, (a.entries!.find((x) => x.type === "regular" && x.size > 0) as any).path);
  const bytes = fs.readFileSync(both);
  const fb = b.entries!.find((x) => x.type === "regular" && x.size > 0) as any;
  bytes[fb.contentsOffset] ^= 0x80;
  fs.writeFileSync(both, bytes);
  t.deepEqual((await check2(both)).tampered.map((x) => x.path).sort(), [a.path, b.path].sort());
});
