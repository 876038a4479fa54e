// supply-chain diff on real manifests of the demo world (closure --no-export: real evaluation,
// nothing realised): one world, then the same world after a reviewed change that re-pins busybox
// (new hash, new URL), re-pins the evaluation-time library demo-lib (a new tarball) and edits one
// service script. The diff must name exactly those, and nothing that did not change.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cli } from "./demo-world.helpers";
import type { DiffResult } from "../../pipeline/steps/diff";

let dir: string;
let world: string;
let base: string;

async function manifestOf(out: string): Promise<string> {
  const r = await cli(["closure", "--file", path.join(world, "default.nix"), "--attribute", "image", "--out", out, "--no-export"]);
  if (r.code !== 0) throw new Error(`closure --no-export failed: ${r.stderr.slice(-2000)}`);
  return r.json.manifest;
}

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-diff-"));
  world = path.join(dir, "world");
  const w = await cli(["demo-world", world]);
  if (w.code !== 0) throw new Error(`demo-world failed: ${w.stderr.slice(-2000)}`);
  base = await manifestOf(path.join(dir, "base"));
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

test.serial("the same world twice: nothing added, removed or changed", async (t) => {
  const again = await manifestOf(path.join(dir, "again"));
  const r = await cli(["diff", "--base", base, "--head", path.join(dir, "again")]);
  t.is(r.code, 0, r.stderr);
  const d: DiffResult = r.json;
  t.deepEqual([d.added, d.removed, d.changed], [[], [], []]);
  t.deepEqual([d.pinnedInputs.added, d.pinnedInputs.removed, d.pinnedInputs.changed], [[], [], []]);
  t.deepEqual(d.evalPaths, { added: [], removed: [] });
  t.is(d.bytesDelta, 0);
  t.is(d.head.manifest, again);
});

test.serial("a re-pinned source, a re-pinned library and an edited script are named as such, and nothing else", async (t) => {
  // busybox: other bytes at another URL (a version bump as the lock records it).
  const lockFile = path.join(world, "lock.json");
  const lock = JSON.parse(fs.readFileSync(lockFile, "utf8"));
  const oldBusybox = lock.sources.busybox;
  const newHash = crypto.createHash("sha256").update("busybox 1.36").digest("hex");
  lock.sources.busybox = { ...oldBusybox, url: oldBusybox.url.replace("busybox-static.nar", "busybox-static-1.36.nar"), hash: { ...oldBusybox.hash, value: newHash } };
  fs.writeFileSync(lockFile, JSON.stringify(lock, null, 2));
  // demo-lib: a new tarball (one more file), pinned by the sha256 Nix computes for it.
  const lib = path.join(dir, "demo-lib");
  fs.mkdirSync(lib, { recursive: true });
  execFileSync("tar", ["-xzf", path.join(world, "bootstrap", "demo-lib.tar.gz"), "-C", lib]);
  const top = fs.readdirSync(lib)[0];
  fs.writeFileSync(path.join(lib, top, "CHANGELOG"), "1.1: reviewed change\n");
  const tarball = path.join(world, "bootstrap", "demo-lib-1.1.tar.gz");
  execFileSync("tar", ["-czf", tarball, "-C", lib, top]);
  const url = `file://${tarball}`;
  const sha256 = execFileSync("nix-prefetch-url", ["--unpack", url], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  const sourcesFile = path.join(world, "nix", "sources.json");
  const sources = JSON.parse(fs.readFileSync(sourcesFile, "utf8"));
  const oldPin = sources["demo-lib"];
  sources["demo-lib"] = { ...oldPin, url, sha256 };
  fs.writeFileSync(sourcesFile, JSON.stringify(sources, null, 2));
  fs.appendFileSync(path.join(world, "rootfs", "writer.sh"), "\n# reviewed change\n");

  await manifestOf(path.join(dir, "head"));
  const markdown = path.join(dir, "diff.md");
  const r = await cli(["diff", "--base", path.join(dir, "base"), "--head", path.join(dir, "head"), "--markdown", markdown]);
  t.is(r.code, 0, r.stderr);
  const d: DiffResult = r.json;
  t.deepEqual(d.added, [], "a re-pinned source is changed, not added");
  t.deepEqual(d.removed, []);
  t.deepEqual(d.changed.map((c) => [c.name, c.what, c.base.hash, c.head.hash, c.head.urls]), [["busybox-static", ["hash", "urls"], `sha256:${oldBusybox.hash.value}`, `sha256:${newHash}`, [lock.sources.busybox.url]]]);
  t.is(d.changed[0].head.chain[0], d.head.drvPath, "why it is needed: the chain from the image");
  t.deepEqual(d.pinnedInputs.changed.map((c) => [c.name, c.what, c.base.urls, c.head.urls]), [["demo-lib", ["hash", "urls"], [oldPin.url], [url]]]);
  t.deepEqual([d.pinnedInputs.added, d.pinnedInputs.removed], [[], []]);
  t.is(d.evalPaths.added.length, 1, JSON.stringify(d.evalPaths));
  t.is(d.evalPaths.removed.length, 1);
  t.regex(d.evalPaths.added[0], /-writer\.sh$/);
  t.not(d.base.drvPath, d.head.drvPath);

  t.deepEqual(d.lines.map((l) => l.split(" ").slice(0, 4).join(" ")), ["source changed: busybox-static sha256:" + oldBusybox.hash.value, "pinned input changed: demo-lib", "evaluation-time paths: 1 added"]);
  const md = fs.readFileSync(markdown, "utf8");
  t.is(d.markdown, markdown);
  t.regex(md, /Sources: 0 added, 1 changed, 0 removed\. Pinned inputs: 0 added, 1 changed, 0 removed\. Evaluation-time paths: 1 added, 1 removed\./);
  t.regex(md, /\| changed \| busybox-static \| source \| .* \| hash sha256:[0-9a-f]{64} → sha256:[0-9a-f]{64}; URL file:\S+busybox-static\.nar → file:\S+busybox-static-1\.36\.nar \| demo-image\.drv → /);
  t.regex(md, /\| changed \| demo-lib \| pinned input \| .* \| nix\/sources\.json#demo-lib \|/);
  t.false(md.includes("linux-image"), "the unchanged kernel package is not in the review");
});

test.serial("bad input is one line naming the file", async (t) => {
  const notManifest = path.join(dir, "not-a-manifest.json");
  fs.writeFileSync(notManifest, JSON.stringify({ hello: 1 }));
  const r = await cli(["diff", "--base", base, "--head", notManifest]);
  t.is(r.code, 2);
  t.regex(r.stderr.trim().split("\n").pop()!, /--head \S+not-a-manifest\.json is not a closure manifest/);
  const missing = await cli(["diff", "--base", path.join(dir, "nowhere"), "--head", base]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /--base \S+nowhere: no such manifest/);
});
