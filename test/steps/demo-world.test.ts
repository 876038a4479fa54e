// The hermetic demo world with real Nix, sandbox on: it builds, builds the same twice, passes
// `nix-build --check` where it claims reproducibility and fails it where it is built not to.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { run } from "../../pipeline/lib/proc";
import { DEMO_PROBES } from "../../pipeline/steps/demo-world";
import { cli, reason } from "./demo-world.helpers";

const SANDBOX = ["--option", "sandbox", "true", "--option", "substituters", ""];

function tmp(t: { teardown(fn: () => void): void }, prefix = "demo-world-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function world(t: any): Promise<{ dir: string; out: any }> {
  const dir = tmp(t);
  const r = await cli(["demo-world", dir]);
  t.is(r.code, 0, r.stderr);
  return { dir, out: r.json };
}

async function nixBuild(file: string, attr: string, extra: string[] = []) {
  return run("nix-build", [file, "-A", attr, "--no-out-link", ...SANDBOX, ...extra], { allowFailure: true, streamStderr: false });
}

test("demo-world writes the world, its lock and the probe spec", async (t) => {
  const { dir, out } = await world(t);
  t.deepEqual(out, {
    file: path.join(dir, "default.nix"),
    attribute: "image",
    nonReproducibleAttribute: "nonReproducible",
    probes: path.join(dir, "probes.json"),
    lock: path.join(dir, "lock.json"),
    pins: path.join(dir, "nix", "sources.json"),
    flake: `path:${dir}`,
    kernelVersion: out.kernelVersion,
  });
  // The flake form pins the same library by flake.lock's narHash, and evaluates to the same derivation.
  const lock = JSON.parse(fs.readFileSync(path.join(dir, "flake.lock"), "utf8"));
  t.regex(lock.nodes["demo-lib"].locked.narHash, /^sha256-/);
  const fromFlake = await run("nix", ["--extra-experimental-features", "nix-command flakes", "eval", "--raw", `${out.flake}#image.drvPath`], { streamStderr: false });
  const fromFile = await run("nix-instantiate", [out.file, "-A", "image"], { streamStderr: false });
  t.is(fromFlake.stdout.trim(), fromFile.stdout.trim());
  // The evaluation-time library is pinned as nixpkgs is: a file:// tarball and the NAR sha256 of its tree.
  const pins = JSON.parse(fs.readFileSync(out.pins, "utf8"));
  t.deepEqual(Object.keys(pins), ["demo-lib"]);
  t.is(pins["demo-lib"].type, "tarball");
  t.is(pins["demo-lib"].url, `file://${path.join(dir, "bootstrap", "demo-lib.tar.gz")}`);
  t.regex(pins["demo-lib"].sha256, /^[0-9a-df-np-sv-z]{52}$/);
  t.regex(out.kernelVersion, /^\d+\.\d+\.\d+-\d+-amd64$/);
  t.deepEqual(JSON.parse(fs.readFileSync(out.probes, "utf8")), DEMO_PROBES);
  const demoLock = JSON.parse(fs.readFileSync(out.lock, "utf8"));
  t.is(demoLock.sources.busybox.hash.mode, "recursive");
  t.true(demoLock.sources.busybox.unpack);
  t.is(demoLock.sources.kernel.hash.mode, "flat");
  for (const s of Object.values<any>(demoLock.sources)) {
    t.regex(s.url, /^file:\/\//);
    t.regex(s.hash.value, /^[0-9a-f]{64}$/);
  }
  // The lock pins exactly the bytes behind its URLs.
  const nar = new URL(demoLock.sources.busybox.url).pathname;
  const { sha256File } = await import("../../pipeline/lib/files");
  t.is(await sha256File(nar), demoLock.sources.busybox.hash.value);
  // No nixpkgs anywhere: the world's only fixed-output inputs are the two locked sources.
  const text = fs.readdirSync(path.join(dir)).filter((f) => f.endsWith(".nix")).map((f) => fs.readFileSync(path.join(dir, f), "utf8")).join("\n");
  t.notRegex(text, /<nixpkgs>|nixpkgs\s*=/);
});

test("the image builds in the sandbox, twice to the same output, and `nix-build --check` passes on every layer", async (t) => {
  const a = await world(t);
  const b = await world(t);
  const ra = await cli(["build", "--file", a.out.file, "--attribute", "image", "--offline"]);
  t.is(ra.code, 0, ra.stderr);
  const rb = await cli(["build", "--file", b.out.file, "--attribute", "image", "--offline"]);
  t.is(rb.code, 0, rb.stderr);
  // Two worlds in two directories: same content addresses.
  t.is(ra.json.outPath, rb.json.outPath);
  t.is(ra.json.narHash, rb.json.narHash);
  for (const f of ["kernel", "initrd", "cmdline"]) t.true(fs.existsSync(path.join(ra.json.outPath, f)), f);
  // Rebuild each layer and compare bit for bit.
  for (const attr of ["tools", "linux", "modules", "rootfs", "initrd", "image"]) {
    const r = await nixBuild(a.out.file, attr, ["--check"]);
    t.is(r.code, 0, `${attr}: ${r.stderr}`);
  }
});

test("nonReproducible builds, and `nix-build --check` catches it", async (t) => {
  const { out } = await world(t);
  const first = await nixBuild(out.file, out.nonReproducibleAttribute);
  t.is(first.code, 0, first.stderr);
  const check = await nixBuild(out.file, out.nonReproducibleAttribute, ["--check"]);
  t.not(check.code, 0);
  t.regex(check.stderr, /may not be deterministic/);
});

test("the initrd is a root-owned, sorted cpio with fixed mtimes", async (t) => {
  const { out } = await world(t);
  const r = await nixBuild(out.file, "initrd");
  t.is(r.code, 0, r.stderr);
  const initrd = r.stdout.trim();
  const list = await run("sh", ["-c", `zcat '${initrd}' | cpio -itv --quiet`], { streamStderr: false });
  const lines = list.stdout.trim().split("\n");
  const names = lines.map((l) => l.split(/\s+/).pop()!);
  t.deepEqual(names, [...names].sort((x, y) => (Buffer.from(x) < Buffer.from(y) ? -1 : 1)));
  for (const l of lines) t.regex(l, /^\S+\s+\d+\s+root\s+root\s+\d+\s+Jan\s+1\s+1970 /, l);
  for (const f of ["init", "bin/busybox", "srv/writer.sh", "www/cgi-bin/index.cgi", "lib/modules/virtio_net.ko", "lib/modules/load-order"])
    t.true(names.includes(f), f);
});

test("a missing kernel package is exit 2 naming the package and the script that fetches it", async (t) => {
  const dir = tmp(t);
  const emptyCache = tmp(t, "demo-cache-");
  const r = await cli(["demo-world", dir, "--cache-dir", emptyCache, "--no-fetch"]);
  t.is(r.code, 2);
  t.regex(reason(r), /linux-image-<version>-amd64.*scripts\/fetch-demo-inputs\.sh/);
});

test("a dynamic busybox is refused with exit 2 naming busybox-static", async (t) => {
  const dir = tmp(t);
  const r = await cli(["demo-world", dir, "--busybox", "/bin/ls", "--no-fetch"]);
  t.is(r.code, 2);
  t.regex(reason(r), /\/bin\/ls is not a static .*busybox-static/);
});

test("an existing lock is kept, and a lock whose hash no longer matches its file is exit 2 naming the source", async (t) => {
  const { dir, out } = await world(t);
  const lockText = fs.readFileSync(out.lock, "utf8");
  const again = await cli(["demo-world", dir, "--no-fetch"]);
  t.is(again.code, 0, again.stderr);
  t.is(fs.readFileSync(out.lock, "utf8"), lockText);
  // Another kernel package on a pinned world is refused rather than silently ignored.
  const otherDeb = path.join(dir, "linux-image-6.1.0-99-amd64_6.1.999-1_amd64.deb");
  fs.writeFileSync(otherDeb, "not really a kernel");
  const other = await cli(["demo-world", dir, "--no-fetch", "--kernel-deb", otherDeb]);
  t.is(other.code, 2);
  t.regex(reason(other), /already pins linux-image-.*: add --update-lock to pin .*6\.1\.0-99/);
  t.is(fs.readFileSync(out.lock, "utf8"), lockText);
  const lock = JSON.parse(lockText);
  lock.sources.kernel.hash.value = "0".repeat(64);
  fs.writeFileSync(out.lock, JSON.stringify(lock));
  const r = await cli(["demo-world", dir, "--no-fetch"]);
  t.is(r.code, 2);
  t.regex(reason(r), /pins source 'kernel' as sha256 0{64} but .*linux-image-.*\.deb now hashes to [0-9a-f]{64}/);
  const fixed = await cli(["demo-world", dir, "--no-fetch", "--update-lock"]);
  t.is(fixed.code, 0, fixed.stderr);
  t.deepEqual(JSON.parse(fs.readFileSync(out.lock, "utf8")), JSON.parse(lockText));
});

test("rerunning keeps an edited world file (and the image changes with it); --reset restores the template", async (t) => {
  const { dir, out } = await world(t);
  const init = path.join(dir, "rootfs", "init");
  const original = fs.readFileSync(init, "utf8");
  const before = await run("nix-instantiate", [out.file, "-A", "image"], { streamStderr: false });
  fs.writeFileSync(init, original.replace("demo-world: ready", "demo-world: ready (edited)"));
  const again = await cli(["demo-world", dir, "--no-fetch"]);
  t.is(again.code, 0, again.stderr);
  t.regex(again.stderr, /keeping edited rootfs\/init/);
  t.regex(fs.readFileSync(init, "utf8"), /ready \(edited\)/);
  const edited = await run("nix-instantiate", [out.file, "-A", "image"], { streamStderr: false });
  t.not(edited.stdout.trim(), before.stdout.trim());
  const reset = await cli(["demo-world", dir, "--no-fetch", "--reset"]);
  t.is(reset.code, 0, reset.stderr);
  t.is(fs.readFileSync(init, "utf8"), original);
  const restored = await run("nix-instantiate", [out.file, "-A", "image"], { streamStderr: false });
  t.is(restored.stdout.trim(), before.stdout.trim());
});

test("a moved world keeps its pins: only the busybox URL follows the directory", async (t) => {
  const { dir, out } = await world(t);
  const orig = JSON.parse(fs.readFileSync(out.lock, "utf8"));
  const moved = path.join(tmp(t), "moved");
  fs.renameSync(dir, moved);
  fs.mkdirSync(dir); // so the teardown of `dir` still has something to remove
  const r = await cli(["demo-world", moved]);
  t.is(r.code, 0, r.stderr);
  const after = JSON.parse(fs.readFileSync(path.join(moved, "lock.json"), "utf8"));
  t.is(after.sources.busybox.url, `file://${path.join(moved, "bootstrap", "busybox-static.nar")}`);
  t.deepEqual(after.sources.busybox.hash, orig.sources.busybox.hash);
  t.deepEqual(after.sources.kernel, orig.sources.kernel);
  // Same sources, same image.
  const a = await run("nix-store", ["-q", "--outputs", (await run("nix-instantiate", [r.json.file, "-A", "image"], { streamStderr: false })).stdout.trim()], { streamStderr: false });
  const b = await cli(["build", "--file", r.json.file, "--attribute", "image", "--offline"]);
  t.is(b.code, 0, b.stderr);
  t.is(a.stdout.trim(), b.json.outPath);
});
