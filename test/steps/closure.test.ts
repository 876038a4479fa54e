// The closure step on a real Nix world (test/fixtures/closure-world; switch to the demo world once it
// is stable): source set vs an independent listing, manifest, --no-export, bad input, atomic export.
import test from "ava";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ByteReader, parseExport } from "../../pipeline/lib/nar";
import { cli, makeWorld, OFFLINE_ENV, removeWorld, World } from "../fixtures/closure-world/world";

let world: World;
test.before(() => {
  world = makeWorld("closure-step");
});
test.after.always(() => removeWorld(world));

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "closure-out-"));
const nix = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: OFFLINE_ENV, maxBuffer: 1 << 26 }).toString();

/** Independent of our code: the .drv closure from nix-store, fixed outputs found by grepping each .drv. */
function independentListing(w: World): { fods: Set<string>; evalPaths: Set<string> } {
  const drv = nix("nix-instantiate", [w.file, "-A", w.attribute]).trim();
  const reqs = nix("nix-store", ["--query", "--requisites", drv]).split("\n").filter(Boolean);
  const fods = new Set<string>();
  for (const r of reqs.filter((p) => p.endsWith(".drv"))) {
    if (fs.readFileSync(r, "utf8").includes('"outputHash"')) {
      for (const o of nix("nix-store", ["--query", "--outputs", r]).split("\n").filter(Boolean)) fods.add(o);
    }
  }
  return { fods, evalPaths: new Set(reqs.filter((p) => !p.endsWith(".drv"))) };
}

test("closure: source set equals an independent listing; manifest complete; chains start at the target; export holds exactly those paths", async (t) => {
  const out = tmp();
  const r = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out]);
  t.is(r.code, 0, r.stderr);
  const m = JSON.parse(fs.readFileSync(r.json.manifest, "utf8"));
  const ind = independentListing(world);
  t.is(ind.fods.size, 2);
  const sorted = (xs: Iterable<string>) => [...xs].sort();
  t.deepEqual(sorted(m.sources.map((s: any) => s.path)), sorted(ind.fods));
  t.deepEqual(sorted(m.evalPaths.map((s: any) => s.path)), sorted(ind.evalPaths));
  t.is(r.json.sources, ind.fods.size);
  t.is(r.json.evalPaths, ind.evalPaths.size);
  const target = nix("nix-instantiate", [world.file, "-A", world.attribute]).trim();
  t.is(m.target.drvPath, target);
  for (const s of m.sources) {
    t.regex(s.drv, /\.drv$/);
    t.true(s.urls.length > 0 && s.urls[0].startsWith("file://"));
    t.truthy(s.hash.mode && s.hash.algo && s.hash.value);
    t.is(s.size, Number(nix("nix-store", ["-q", "--size", s.path]).trim()));
    t.is(s.chain[0], target);
    t.is(s.chain[s.chain.length - 1], s.path);
    t.is(s.chain[s.chain.length - 2], s.drv);
  }
  for (const e of m.evalPaths) {
    t.is(e.chain[0], target);
    t.is(e.chain[e.chain.length - 1], e.path);
  }
  const greeting = m.sources.find((s: any) => s.path.endsWith("-greeting.txt"));
  t.deepEqual(greeting.chain.map((p: string) => p.replace(/^.*?-/, "")), ["target.drv", "base.drv", "greeting.txt.drv", "greeting.txt"]);
  t.is(greeting.hash.mode, "flat");
  // The export holds exactly the sources, and its hash is the printed one.
  const exported = await parseExport(new ByteReader(fs.readFileSync(r.json.closureFile)));
  t.deepEqual(sorted(exported.map((e) => e.path)), sorted([...ind.fods, ...ind.evalPaths]));
  t.is(r.json.closureSha256, execFileSync("sha256sum", [r.json.closureFile]).toString().split(" ")[0]);
  const report = fs.readFileSync(r.json.report, "utf8");
  t.regex(report, /busybox/);
  t.regex(report, /target\.drv → busybox\.drv → busybox/);
  fs.rmSync(out, { recursive: true, force: true });
});

test("closure --no-export writes the manifest and report but no closure file, and removes an older one", (t) => {
  const out = tmp();
  // A closure from an earlier run must not stand next to a manifest it does not belong to.
  fs.writeFileSync(path.join(out, "source-export.closure"), "stale");
  const r = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out, "--no-export", "--top", "1"]);
  t.is(r.code, 0, r.stderr);
  t.is(r.json.closureFile, null);
  t.false(fs.existsSync(path.join(out, "source-export.closure")));
  t.deepEqual(fs.readdirSync(out).sort(), ["manifest.json", "report.html", "report.md"]);
  t.regex(fs.readFileSync(r.json.report, "utf8"), /\| 1 \|/);
  t.notRegex(fs.readFileSync(r.json.report, "utf8"), /\| 2 \|/);
  fs.rmSync(out, { recursive: true, force: true });
});

test("closure: bad file, unknown attribute, bad --top and missing nix exit 2 with a reason naming them", (t) => {
  const out = tmp();
  const missing = cli(["closure", "--file", "/nonexistent/world.nix", "--attribute", "target", "--out", out]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /not found: \/nonexistent\/world\.nix/);
  const attr = cli(["closure", "--file", world.file, "--attribute", "no-such-thing", "--out", out]);
  t.is(attr.code, 2);
  t.regex(attr.stderr, /unknown attribute 'no-such-thing'/);
  const broken = path.join(out, "broken.nix");
  fs.writeFileSync(broken, "{ this is not nix");
  const syntax = cli(["closure", "--file", broken, "--attribute", "x", "--out", out]);
  t.is(syntax.code, 2);
  t.regex(syntax.stderr, /cannot evaluate attribute 'x' of .*broken\.nix/);
  const top = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out, "--top", "many"]);
  t.is(top.code, 2);
  t.regex(top.stderr, /--top/);
  const emptyPath = fs.mkdtempSync(path.join(os.tmpdir(), "no-nix-"));
  const noNix = cli(["closure", "--file", world.file, "--attribute", world.attribute, "--out", out], { ...OFFLINE_ENV, PATH: emptyPath });
  t.is(noNix.code, 2);
  t.regex(noNix.stderr, /missing tool 'nix'.*nix-bin/);
  t.false(fs.existsSync(path.join(out, "manifest.json")));
  fs.rmSync(out, { recursive: true, force: true });
  fs.rmSync(emptyPath, { recursive: true, force: true });
});

test("closure: a killed export leaves no source-export.closure (mocked: a slow nix-store --export wrapper, to kill mid-write)", async (t) => {
  const out = tmp();
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), "slow-nix-store-"));
  const real = execFileSync("sh", ["-c", "command -v nix-store"]).toString().trim();
  // Every nix-store call is the real one, except --export, which writes half its stream and then stalls.
  fs.writeFileSync(
    path.join(bin, "nix-store"),
    `#!/bin/sh\nif [ "$1" = "--export" ]; then "${real}" "$@" | head -c 100000; touch "${bin}/exporting"; sleep 600; exit 0; fi\nexec "${real}" "$@"\n`,
    { mode: 0o755 },
  );
  const child = spawn(process.execPath, [path.join(__dirname, "..", "..", "bin", "supply-chain.js"), "closure", "--file", world.file, "--attribute", world.attribute, "--out", out], {
    env: { ...OFFLINE_ENV, PATH: `${bin}:${process.env.PATH}` },
    stdio: "ignore",
    detached: true, // own process group: the kill below reaches the wrapper's sleep too
  });
  const deadline = Date.now() + 120_000;
  while (!fs.existsSync(path.join(bin, "exporting")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.true(fs.existsSync(path.join(bin, "exporting")), "the export never started");
  const partial = fs.readdirSync(out).filter((f) => f.includes("source-export.closure"));
  t.true(partial.length === 1 && partial[0].endsWith(".tmp"), `only a temp file while exporting, saw ${partial}`);
  const exited = new Promise((r) => child.once("exit", r));
  process.kill(-child.pid!, "SIGKILL");
  await exited;
  t.false(fs.existsSync(path.join(out, "source-export.closure")));
  t.false(fs.existsSync(path.join(out, "manifest.json")));
  fs.rmSync(out, { recursive: true, force: true });
  fs.rmSync(bin, { recursive: true, force: true });
});

test("closure --flake (flakes enabled per call on Nix 2.8): same sources as the file, check passes", (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "closure-flake-"));
  for (const f of ["default.nix", "lock.json", "local-note.txt"]) fs.copyFileSync(path.join(world.dir, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, "flake.nix"), `{ outputs = { self }: { packages.x86_64-linux.default = (import ./default.nix).target; }; }\n`);
  const out = tmp();
  const ref = `path:${dir}#default`;
  const r = cli(["closure", "--flake", ref, "--out", out]);
  t.is(r.code, 0, r.stderr);
  const m = JSON.parse(fs.readFileSync(r.json.manifest, "utf8"));
  const ind = independentListing(world);
  t.deepEqual(m.sources.map((s: any) => s.path).sort(), [...ind.fods].sort());
  t.is(m.target.flake, ref);
  // Path literals inside the flake are copied to the store one by one, as without flakes: same target.
  t.deepEqual(m.evalPaths.map((s: any) => s.path).sort(), [...ind.evalPaths].sort());
  const c = cli(["check-closure", "--flake", ref, "--closure", r.json.closureFile]);
  t.is(c.code, 0, c.stderr);
  const both = cli(["closure", "--flake", ref, "--file", world.file, "--attribute", "target", "--out", out]);
  t.is(both.code, 2);
  fs.rmSync(out, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
});

test("closure: a source whose file is gone (never realised) is exit 2 with one line naming its URL, not the command line", (t) => {
  const w = makeWorld(`closure-gone-${process.pid}-${Date.now()}`); // its greeting is in no store yet
  const out = tmp();
  try {
    const greeting = path.join(w.dir, "files", "greeting.txt");
    fs.rmSync(greeting);
    const r = cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", out]);
    t.is(r.code, 2, r.stderr);
    const reason = r.stderr.trimEnd().split("\n").pop()!;
    t.is(reason.split(" ").filter((x) => x.endsWith(".drv")).length, 0, reason);
    t.regex(reason, new RegExp(`^supply-chain closure: source file://${greeting} cannot be fetched: the file does not exist on this machine`));
    t.false(fs.existsSync(path.join(out, "manifest.json")));
  } finally {
    removeWorld(w);
    fs.rmSync(out, { recursive: true, force: true });
  }
});

test("closure: a source whose bytes changed in the store after Nix registered them (tampered) is exit 1 naming it, and nothing is exported", (t) => {
  const w = makeWorld(`closure-tampered-${process.pid}-${Date.now()}`); // its sources are its own store paths
  const [first, second] = [tmp(), tmp()];
  let victim = "";
  try {
    const ok = cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", first]);
    t.is(ok.code, 0, ok.stderr);
    const manifest = JSON.parse(fs.readFileSync(path.join(first, "manifest.json"), "utf8"));
    victim = manifest.sources.find((s: any) => s.path.endsWith("-greeting.txt")).path;
    fs.chmodSync(victim, 0o644);
    fs.appendFileSync(victim, "tampered\n");
    const r = cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", second]);
    t.is(r.code, 1, r.stderr);
    // The reason is the last line: the progress lines of the stopped export and digest come before it.
    t.regex(r.stderr.trimEnd().split("\n").pop()!, new RegExp(`^supply-chain closure: store path ${victim} is not what Nix registered \\(NAR hash sha256:\\w+, now sha256:\\w+\\): the store is corrupted or tampered, and nothing was exported$`));
    t.false(fs.existsSync(path.join(second, "source-export.closure")), "no closure published");
  } finally {
    if (victim) nix("nix-store", ["--delete", victim]); // tampered bytes must not stay in the store
    removeWorld(w);
    for (const d of [first, second]) fs.rmSync(d, { recursive: true, force: true });
  }
});
