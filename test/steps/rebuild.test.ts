// The offline rebuild (bubblewrap) and the bit-for-bit verdict on the real demo world: real nix,
// real bwrap, real closures — including closures broken on purpose, which must be refused.
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { offlineBuild } from "../../pipeline/steps/rebuild";
import { CheckFailed } from "../../pipeline/lib/step";
import { sha256File } from "../../pipeline/lib/files";
import { cli, requireTool, closureOf, closureWithout, demoWorld, DemoWorld, ENV, rm, tamperedCopy, killIsolationMidBuild, killMidBuild, orphanMidBuild, swappingFile } from "./rebuild-helpers";
import { LOCK_NAME } from "../../pipeline/lib/lifetime";

let w: DemoWorld;
let closure: string;

test.before(async () => {
  w = await demoWorld("rebuild-test-");
  closure = await closureOf(w, w.attribute, "closure");
});

test.after.always(() => {
  if (w) rm(w.dir);
});

test.serial("bwrap: the closure alone rebuilds the image in an EMPTY store with no network, and verify finds every path identical", async (t) => {
  const out = path.join(w.dir, "rb-bwrap");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.is(r.json.isolation, "bwrap");
  t.deepEqual(r.json.network.interfaces, ["lo"], "only loopback inside the isolation");
  // every non-fixed-output derivation of the graph, not only the top
  t.true(r.json.paths.length >= 3, JSON.stringify(r.json.paths));
  t.true(r.json.paths.some((p: any) => p.path === r.json.outPath && p.narHash === r.json.narHash));
  for (const p of r.json.paths) t.true(fs.existsSync(p.nar), p.nar);
  const logText = fs.readFileSync(r.json.log, "utf8");
  t.regex(logText, /importing .* into the empty store/);
  t.notRegex(logText, /cache\.nixos\.org|https?:\/\//, "no download was attempted");
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, "rebuild.json"), "utf8")), r.json, "rebuild.json is the result");

  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.checked, r.json.paths.length);
  t.is(v.json.matched, v.json.checked);
  t.deepEqual(v.json.mismatched, []);
  t.regex(fs.readFileSync(v.json.report, "utf8"), new RegExp(`${v.json.checked} of ${v.json.checked} paths reproducible`));

  // The rebuild of one attribute is no evidence for another.
  const other = await cli(["verify", "--file", w.file, "--attribute", w.nonReproducibleAttribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(other.code, 2, other.stderr.slice(-2000));
  t.regex(other.stderr, /the rebuild in .* is of \/nix\/store\/.*-demo-image\.drv, but nonReproducible/);
});

test("the flake form: closure, rebuild and verify take --flake path:DIR#image; the rebuild in an empty store with no network is the file form's derivation, and verify finds every path identical", async (t) => {
  const flake = `${w.flake}#${w.attribute}`;
  const c = await cli(["closure", "--flake", flake, "--out", path.join(w.dir, "closure-flake")]);
  t.is(c.code, 0, c.stderr.slice(-3000));
  const out = path.join(w.dir, "rb-flake");
  const r = await cli(["rebuild", "--flake", flake, "--closure", c.json.closureFile, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.deepEqual(r.json.network.interfaces, ["lo"], "only loopback inside the isolation");
  const logText = fs.readFileSync(r.json.log, "utf8");
  t.regex(logText, /importing .* into the empty store/);
  t.notRegex(logText, /cache\.nixos\.org|https?:\/\//, "no download was attempted");
  t.is(r.json.drvPath, execFileSync("nix-instantiate", [w.file, "-A", w.attribute], { env: ENV, encoding: "utf8" }).trim());
  t.true(r.json.sourceCheck.checked > 0);

  const v = await cli(["verify", "--flake", flake, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.checked, r.json.paths.length);
  t.is(v.json.matched, v.json.checked);
  // The flake without #ATTR plus --attribute is the same target.
  const split = await cli(["verify", "--flake", w.flake, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(split.code, 0, split.stderr.slice(-3000));
  t.true(split.json.reproducible);
});

test("rebuild --flake: a flake that is not local, or --flake with --file, is exit 2 before anything is staged", async (t) => {
  const out = path.join(w.dir, "rb-flake-bad");
  const remote = await cli(["rebuild", "--flake", "github:example/world#image", "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(remote.code, 2, remote.stderr);
  t.regex(remote.stderr, /--flake github:example\/world#image is not a local flake \(path:\/dir#attr\): the rebuild evaluates your checkout/);
  const both = await cli(["rebuild", "--flake", `${w.flake}#image`, "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(both.code, 2, both.stderr);
  t.regex(both.stderr, /give either --flake or --file with --attribute, not both/);
  t.false(fs.existsSync(out), "the refused runs leave no --out");
});

test("the nonReproducible attribute: verify says reproducible:false, naming the path and the file that differs", async (t) => {
  requireTool("diffoscope");
  const c = await closureOf(w, w.nonReproducibleAttribute, "closure-nonrepro");
  const out = path.join(w.dir, "rb-nonrepro");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.nonReproducibleAttribute, "--closure", c, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  const v = await cli(["verify", "--file", w.file, "--attribute", w.nonReproducibleAttribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 1, v.stderr.slice(-3000));
  t.false(v.json.reproducible);
  t.true(v.json.mismatched.length >= 1);
  const top = v.json.mismatched.find((m: any) => m.path === r.json.outPath);
  t.truthy(top, `the top path ${r.json.outPath} is named: ${JSON.stringify(v.json.mismatched)}`);
  t.true(top.files.length >= 1, "the differing file is named");
  t.regex(v.stderr, /not reproducible/);
  const md = fs.readFileSync(v.json.report, "utf8");
  t.regex(md, new RegExp(`${v.json.matched} of ${v.json.checked} paths reproducible`));
  t.true(md.includes(top.files[0]));
  // diffoscope (scripts/setup.sh installs diffoscope-minimal) details the same file's contents
  t.truthy(top.diffoscope, "a diffoscope report for the mismatch");
  t.true(fs.readFileSync(top.diffoscope, "utf8").includes(top.files[0]));
});

test("a closure with one byte of one source changed: the rebuild refuses before building, naming the source", async (t) => {
  const bad = path.join(w.dir, "tampered.closure");
  const victim = await tamperedCopy(closure, /linux-image/, bad);
  const out = path.join(w.dir, "rb-tampered");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", bad, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 1, r.stderr.slice(-3000));
  t.true(r.stderr.includes(victim.path), r.stderr.slice(-1000));
  t.true(r.json.refused);
  t.false(r.json.built);
  t.deepEqual(r.json.check.tampered.map((x: any) => x.path), [victim.path]);
  t.false(fs.existsSync(path.join(out, "build.log")), "no isolated build was started");
  t.false(fs.existsSync(out), "no empty --out is left behind");
  // An existing --out keeps its place, but not an earlier run's completion marker.
  fs.mkdirSync(out);
  fs.writeFileSync(path.join(out, "rebuild.json"), "{}");
  const again = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", bad, "--isolation", "bwrap", "--out", out]);
  t.is(again.code, 1, again.stderr.slice(-2000));
  t.deepEqual(fs.readdirSync(out), [], "the stale marker is gone");
});

test("the closure swapped between check and import (each read of the path gets other bytes): the checked bytes are the imported bytes, and rebuild.json records their digest", async (t) => {
  const bad = path.join(w.dir, "swap-tampered.closure");
  await tamperedCopy(closure, /linux-image/, bad);
  const swapping = swappingFile(path.join(w.dir, "swapping.closure"), [closure, bad]);
  try {
    const out = path.join(w.dir, "rb-swap");
    const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", path.join(w.dir, "swapping.closure"), "--isolation", "bwrap", "--out", out]);
    t.is(swapping.opens(), 1, "the caller's path is read once");
    t.is(r.code, 0, r.stderr.slice(-3000));
    t.is(r.json.closureSha256, await sha256File(closure), "the digest of the bytes checked and imported");
    t.false(fs.readdirSync(out).some((e) => e.startsWith(".closure-")), "the private copy is removed");
    const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
    t.is(v.code, 0, v.stderr.slice(-2000));
  } finally {
    await swapping.stop();
  }
});

test("--closure-sha256: a closure whose bytes are not the closure step's is refused before anything reads it", async (t) => {
  const out = path.join(w.dir, "rb-pinned");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--closure-sha256", "0".repeat(64), "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 1, r.stderr.slice(-2000));
  t.true(r.json.refused);
  t.is(r.json.closureSha256, await sha256File(closure));
  t.regex(r.stderr, new RegExp(`closure .* has SHA-256 ${r.json.closureSha256}, expected 0{64}`));
  t.false(fs.existsSync(out), "no isolated build was started, no copy left: the refused run leaves no --out");
});

test("a closure missing one source: the rebuild refuses naming it, and the isolated build alone fails naming it with no network tried", async (t) => {
  const bad = path.join(w.dir, "missing.closure");
  const missing = await closureWithout(closure, /linux-image/, bad);
  const out = path.join(w.dir, "rb-missing");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", bad, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 1, r.stderr.slice(-3000));
  t.true(r.stderr.includes(missing), r.stderr.slice(-1000));
  t.deepEqual(r.json.check.missing.map((x: any) => x.path), [missing]);

  // Without the pre-check (the import/build machinery alone): the empty, offline store cannot get it.
  const e = await t.throwsAsync(
    offlineBuild({ file: w.file, attribute: w.attribute, closure: bad, isolation: "bwrap", out: path.join(w.dir, "rb-missing-raw"), sourceCheck: null }),
    { instanceOf: CheckFailed },
  );
  t.true(e!.message.includes(missing), e!.message);
  t.regex(e!.message, /not in the closure and cannot be fetched offline/);
  const res = (e as CheckFailed).result as any;
  t.deepEqual(res.network.interfaces, ["lo"], "proof of isolation: loopback only");
  const logText = fs.readFileSync(res.log, "utf8");
  t.notRegex(logText, /cache\.nixos\.org|https?:\/\//, "substituters off: no download was attempted");
  t.false(fs.existsSync(path.join(w.dir, "rb-missing-raw", "rebuild.json")));
});

test("a closure that carries a prebuilt output: refused by the source check, and never taken as rebuilt by the isolated build", async (t) => {
  const nix = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  const drv = nix("nix-instantiate", [w.file, "-A", w.attribute]);
  const toolsDrv = nix("nix-store", ["-qR", drv]).split("\n").find((p) => /-demo-tools\.drv$/.test(p))!;
  t.truthy(toolsDrv, "the demo world has a tools stage");
  const tools = nix("nix-store", ["--realise", toolsDrv, "--option", "sandbox", "true"]);
  const extra = execFileSync("nix-store", ["--export", tools], { maxBuffer: 1 << 30 });
  const orig = fs.readFileSync(closure);
  const bad = path.join(w.dir, "smuggled.closure");
  fs.writeFileSync(bad, Buffer.concat([orig.subarray(0, orig.length - 8), extra])); // one stream: drop the first end marker

  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", bad, "--isolation", "bwrap", "--out", path.join(w.dir, "rb-smuggled")]);
  t.is(r.code, 1, r.stderr.slice(-2000));
  t.true(r.json.refused);
  t.true(r.stderr.includes(tools), r.stderr.slice(-1000));

  const e = await t.throwsAsync(
    offlineBuild({ file: w.file, attribute: w.attribute, closure: bad, isolation: "bwrap", out: path.join(w.dir, "rb-smuggled-raw"), sourceCheck: null }),
    { instanceOf: CheckFailed },
  );
  t.true(e!.message.includes(tools), e!.message);
  t.regex(e!.message, /not rebuilt from sources/);
});

test.serial("a rebuild killed half-way: nothing half-written is accepted, and a re-run completes", async (t) => {
  const out = path.join(w.dir, "rb-killed");
  const first = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(first.code, 0, first.stderr.slice(-3000));
  const oldJson = path.join(w.dir, "first-rebuild.json");
  fs.writeFileSync(oldJson, first.stdout);

  // Second run into the same directory, SIGKILLed (with its process group) while building.
  await killMidBuild(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);

  t.false(fs.existsSync(path.join(out, "rebuild.json")), "no completion marker after a kill");
  t.true(fs.readdirSync(out).some((e) => e.startsWith(".staging-")), "the killed run's work is visibly staged, not in place");
  const stale = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", oldJson]);
  t.is(stale.code, 2, stale.stderr);
  t.regex(stale.stderr, /incomplete|superseded/);

  const again = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(again.code, 0, again.stderr.slice(-3000));
  t.false(fs.readdirSync(out).some((e) => e.startsWith(".staging-") || e.startsWith(".closure-")), "leftovers cleaned");
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);

  // A NAR changed after the fact is refused too.
  const nar = again.json.paths[0].nar;
  fs.appendFileSync(nar, "x");
  const tampered = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(tampered.code, 2);
  t.regex(tampered.stderr, /modified/);
});

test.serial("the isolation killed from outside mid-build (as by the OOM killer) is the machine refusing: exit 2 naming the signal and the log, no verdict", async (t) => {
  const out = path.join(w.dir, "rb-oom");
  const r = await killIsolationMidBuild(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 2, r.stderr.slice(-3000));
  t.is(r.stdout, "", "no verdict on stdout: the sources were not judged");
  t.regex(r.stderr, new RegExp(`supply-chain rebuild: the isolated run was killed by SIGKILL from outside this step \\(the OOM killer, or another process; log ${out}/build\\.log\\)`));
});

test.serial("a rebuild whose starter is killed (a killed pulumi up) stops with its children, leaves no live lock, and a re-run completes", async (t) => {
  const out = path.join(w.dir, "rb-orphaned");
  const args = ["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "bwrap", "--out", out];
  const { step, below } = await orphanMidBuild(args);
  t.true(below.length > 0, "bwrap and nix were running below the step");
  const running = () => [step, ...below].filter((p) => fs.existsSync(`/proc/${p}`) && !/^\S+ \(.*\) Z/.test(fs.readFileSync(`/proc/${p}/stat`, "utf8")));
  const deadline = Date.now() + 20_000;
  while (running().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
  t.deepEqual(running(), [], "the step and every process below it stopped");
  t.false(fs.existsSync(path.join(out, "rebuild.json")));
  t.false(fs.existsSync(path.join(out, LOCK_NAME)), "the lock was released");

  const again = await cli(args);
  t.is(again.code, 0, again.stderr.slice(-3000));
  t.false(fs.readdirSync(out).some((e) => e.startsWith(".staging-") || e.startsWith(".closure-")), "leftovers cleaned");
});

test("bad input: unknown isolation, missing closure, docker without an image -> exit 2 with a reason", async (t) => {
  const base = ["rebuild", "--file", w.file, "--attribute", w.attribute, "--out", path.join(w.dir, "rb-bad")];
  const a = await cli([...base, "--closure", closure, "--isolation", "chroot"]);
  t.is(a.code, 2);
  t.regex(a.stderr, /unknown --isolation 'chroot'/);
  const b = await cli([...base, "--closure", path.join(w.dir, "nope.closure"), "--isolation", "bwrap"]);
  t.is(b.code, 2);
  t.regex(b.stderr, /closure file not found: .*nope\.closure/);
  const c = await cli([...base, "--closure", closure, "--isolation", "docker"]);
  t.is(c.code, 2);
  t.regex(c.stderr, /--image/);
});
