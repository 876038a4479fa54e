// closure + check-closure on the hermetic demo world (`supply-chain demo-world`): the image's sources
// (busybox NAR, recursive; Debian kernel package, flat; builder scripts and rootfs files, eval-time).
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ByteReader, parseExport, ExportedPath } from "../../pipeline/lib/nar";
import { cli, OFFLINE_ENV } from "../fixtures/closure-world/world";

let dir: string;
let world: { file: string; attribute: string };
let out: string;
let result: any;
let manifest: any;
let exported: ExportedPath[];

test.before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "closure-demo-"));
  const w = cli(["demo-world", path.join(dir, "world")]);
  if (w.code !== 0) throw new Error(`demo-world failed: ${w.stderr.slice(-2000)}`);
  world = w.json;
  out = path.join(dir, "out");
  const r = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out]);
  if (r.code !== 0) throw new Error(`closure failed: ${r.stderr.slice(-2000)}`);
  result = r.json;
  manifest = JSON.parse(fs.readFileSync(result.manifest, "utf8"));
  exported = await parseExport(new ByteReader(fs.createReadStream(result.closureFile)), { entries: true });
});
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const nix = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: OFFLINE_ENV, maxBuffer: 1 << 26 }).toString();

test("demo world: the closure's sources equal an independent listing (nix-store -qR of the .drv + grep outputHash)", (t) => {
  const drv = nix("nix-instantiate", [world.file, "-A", world.attribute]).trim();
  const reqs = nix("nix-store", ["--query", "--requisites", drv]).split("\n").filter(Boolean);
  const fods: string[] = [];
  for (const r of reqs.filter((p) => p.endsWith(".drv"))) {
    if (fs.readFileSync(r, "utf8").includes('"outputHash"')) fods.push(...nix("nix-store", ["--query", "--outputs", r]).split("\n").filter(Boolean));
  }
  const evalPaths = reqs.filter((p) => !p.endsWith(".drv"));
  t.true(fods.length >= 2, `expected busybox and the kernel package, found ${fods}`);
  t.deepEqual(manifest.sources.map((s: any) => s.path).sort(), fods.sort());
  t.deepEqual(manifest.evalPaths.map((s: any) => s.path).sort(), evalPaths.sort());
  // The pinned library no derivation references: the path Nix gives builtins.fetchTarball for the pin.
  const pin = JSON.parse(fs.readFileSync(path.join(path.dirname(world.file), "nix", "sources.json"), "utf8"))["demo-lib"];
  const pinned = JSON.parse(nix("nix-instantiate", ["--eval", "--json", "-E", `builtins.fetchTarball { name = "source"; url = "${pin.url}"; sha256 = "${pin.sha256}"; }`]));
  t.deepEqual(manifest.pinnedInputs.map((s: any) => [s.path, s.pinnedIn.map((p: any) => p.pin), s.detectedBy]), [[pinned, ["nix/sources.json#demo-lib"], ["pins", "evaluation"]]]);
  t.deepEqual(exported.map((e) => e.path).sort(), [...fods, ...evalPaths, pinned].sort());
  for (const s of [...manifest.sources, ...manifest.evalPaths]) t.is(s.chain[0], drv);
  t.is(result.sources, fods.length);
});

test("demo world: check-closure accepts the closure, and names the kernel package after one flipped byte", (t) => {
  const ok = cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", result.closureFile]);
  t.is(ok.code, 0, ok.stderr);
  t.true(ok.json.ok);
  // The biggest flat source is the Debian kernel package: flip one byte in the middle of it.
  const flat = manifest.sources.filter((s: any) => s.hash.mode === "flat").sort((a: any, b: any) => b.size - a.size)[0];
  const e = exported.find((x) => x.path === flat.path)!;
  const entry = e.entries!.find((x) => x.type === "regular") as any;
  const copy = path.join(dir, "tampered.closure");
  fs.copyFileSync(result.closureFile, copy);
  const fd = fs.openSync(copy, "r+");
  const at = entry.contentsOffset + Math.floor(entry.size / 2);
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] ^= 0x80;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
  const bad = cli(["check-closure", "--file", world.file, "--attribute", world.attribute, "--closure", copy]);
  t.is(bad.code, 1);
  t.deepEqual(bad.json.tampered.map((x: any) => [x.path, x.drv]), [[flat.path, flat.drv]]);
  t.regex(bad.stderr, new RegExp(flat.path));
});
