// The system world (`demo-world --full`), with real Nix, sandbox on: db-writer and db-reader compiled in
// the sandbox from apps/, PostgreSQL in the image. It rebuilds from its closure alone and verifies bit for
// bit (both app binaries included); a crate whose bytes are not Cargo.lock's is named by check-closure;
// the image passes its probes under QEMU, and the same probes fail when the writer is broken.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ByteReader, parseExport } from "../../pipeline/lib/nar";
import { cli } from "./rebuild-helpers";

interface SystemWorld {
  dir: string;
  file: string;
  attribute: string;
  probes: string;
  artifact: string;
}

let w: SystemWorld;

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "system-world-"));
  const made = await cli(["demo-world", "--full", path.join(dir, "world")]);
  if (made.code !== 0) throw new Error(`demo-world --full failed: ${made.stderr.slice(-2000)}`);
  const { file, systemAttribute, systemProbes } = made.json;
  const built = await cli(["build", "--file", file, "--attribute", systemAttribute, "--offline"]);
  if (built.code !== 0) throw new Error(`build of ${systemAttribute} failed: ${built.stderr.slice(-3000)}`);
  w = { dir, file, attribute: systemAttribute, probes: systemProbes, artifact: built.json.artifact };
});

test.after.always(() => {
  if (w) fs.rmSync(w.dir, { recursive: true, force: true });
});

test.serial("the system image rebuilds from its closure alone, in an empty store with no network, and verify finds every path identical, both app binaries included", async (t) => {
  const c = await cli(["closure", "--file", w.file, "--attribute", w.attribute, "--out", path.join(w.dir, "closure")]);
  t.is(c.code, 0, c.stderr.slice(-3000));
  const manifest = JSON.parse(fs.readFileSync(c.json.manifest, "utf8"));
  // Each Cargo.lock crate is a source of its own, with the lock's checksum; so are the Debian packages.
  const lock = fs.readFileSync(path.join(w.dir, "world", "apps", "db-reader", "Cargo.lock"), "utf8");
  const crates = [...lock.matchAll(/^name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry/gm)].map((m) => `${m[1]}-${m[2]}.crate`);
  t.true(crates.length > 20, `${crates.length} registry crates in Cargo.lock`);
  for (const crate of crates) t.true(manifest.sources.some((s: any) => s.path.endsWith(`-${crate}`)), `${crate} is a source of the closure`);
  t.true(manifest.sources.some((s: any) => /-libpq5_[^/]*\.deb$/.test(s.path)), "libpq5's .deb is a source");
  // Progress a person can follow: the export and its hash end with their sizes and rates.
  t.regex(c.stderr, /\[[\d:]+ closure\] exporting: [\d.]+ MiB in [\d.]+ s, [\d.]+ [KMG]?i?B\/s/);
  t.regex(c.stderr, /\[[\d:]+ closure\] hashing the closure: [\d.]+ MiB in [\d.]+ s/);

  const out = path.join(w.dir, "rebuild");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", c.json.closureFile, "--isolation", "bwrap", "--out", out]);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.deepEqual(r.json.network.interfaces, ["lo"], "only loopback inside the isolation");
  const logText = fs.readFileSync(r.json.log, "utf8");
  t.regex(logText, /importing .* into the empty store/);
  t.notRegex(logText, /https?:\/\//, "no download was attempted");
  // The registry cache the crates were pinned from is a host file:// source: the isolated build never saw it.
  t.notRegex(logText, /\.cargo\/registry/);
  const rebuilt = r.json.paths.map((p: any) => p.path as string);
  for (const app of ["-db-writer", "-db-reader"]) t.true(rebuilt.some((p: string) => p.endsWith(app)), `${app} was rebuilt: ${rebuilt.join(" ")}`);
  // And the rebuild counts Nix's derivations: every one it built was announced as k of N.
  const counted = [...r.stderr.matchAll(/\[[\d:]+ rebuild\] derivations: (\d+) of (\d+) built, building (\S+)/g)];
  t.is(counted.length, rebuilt.length, r.stderr.slice(-3000));
  t.deepEqual(counted.map((m) => Number(m[1])), [...rebuilt.keys()], "0, 1, … of N");
  t.true(counted.every((m) => Number(m[2]) === rebuilt.length), `of ${rebuilt.length}`);

  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")]);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.checked, rebuilt.length);
  t.is(v.json.matched, v.json.checked);
  t.deepEqual(v.json.mismatched, []);
});

test("a crate whose bytes differ from its Cargo.lock checksum: check-closure refuses, naming the crate", async (t) => {
  // The vendor directory's closure holds every crate and little else, so the test stays small.
  const c = await cli(["closure", "--file", w.file, "--attribute", "vendor", "--out", path.join(w.dir, "closure-vendor")]);
  t.is(c.code, 0, c.stderr.slice(-3000));
  const manifest = JSON.parse(fs.readFileSync(c.json.manifest, "utf8"));
  const crate = manifest.sources.find((s: any) => /-itoa-[\d.]+\.crate$/.test(s.path));
  t.truthy(crate, "itoa is a source of the vendor closure");
  const ok = await cli(["check-closure", "--file", w.file, "--attribute", "vendor", "--closure", c.json.closureFile]);
  t.is(ok.code, 0, ok.stderr.slice(-2000));

  const bytes = fs.readFileSync(c.json.closureFile);
  const exported = await parseExport(new ByteReader(bytes), { entries: true });
  const entry = exported.find((e) => e.path === crate.path)!.entries!.find((e) => e.type === "regular") as any;
  bytes[entry.contentsOffset + Math.floor(entry.size / 2)] ^= 0x01;
  const tampered = path.join(w.dir, "tampered-crate.closure");
  fs.writeFileSync(tampered, bytes);
  const bad = await cli(["check-closure", "--file", w.file, "--attribute", "vendor", "--closure", tampered]);
  t.is(bad.code, 1, bad.stderr.slice(-2000));
  t.deepEqual(bad.json.tampered.map((x: any) => [x.path, x.mode]), [[crate.path, "flat"]]);
  t.regex(bad.stderr, new RegExp(`tampered.*${crate.path.replace(/[.+]/g, "\\$&")}`));
});

test.serial("the system image boots and passes its probes; the same probes fail against an image whose writer is broken", async (t) => {
  const good = await cli(["boot-test", "--image", w.artifact, "--probes", w.probes, "--memory", "512", "--timeout", "300"]);
  t.is(good.code, 0, good.stderr.slice(-3000));
  t.true(good.json.passed);
  t.log(`booted and probed in ${good.json.bootSeconds} s (${good.json.accel})`);
  t.true(good.json.probes.length >= 5);
  t.true(good.json.probes.every((p: any) => p.ok), JSON.stringify(good.json.probes));

  // A case built to fail: the writer still stores each line, but acknowledges with "ACK" instead of "OK <id>".
  const pool = path.join(w.dir, "world", "apps", "db-writer", "src", "db_pool.cpp");
  const source = fs.readFileSync(pool, "utf8");
  t.true(source.includes('"OK "'));
  fs.writeFileSync(pool, source.replaceAll('"OK "', '"ACK "'));
  const built = await cli(["build", "--file", w.file, "--attribute", w.attribute, "--offline"]);
  t.is(built.code, 0, built.stderr.slice(-3000));
  t.not(built.json.artifact, w.artifact, "the broken writer is another image");
  // Probes retry until the deadline, so a failing image costs the whole timeout: keep it short.
  const broken = await cli(["boot-test", "--image", built.json.artifact, "--probes", w.probes, "--memory", "512", "--timeout", "90"]);
  t.is(broken.code, 1, broken.stderr.slice(-3000));
  t.false(broken.json.passed);
  const failed = broken.json.probes.filter((p: any) => !p.ok).map((p: any) => p.name);
  t.true(failed.includes("writer acknowledges a line"), JSON.stringify(broken.json.probes));
  t.true(broken.json.probes.find((p: any) => p.name === "reader is healthy").ok, "the reader is not what broke");
});
