// The two pins of nixpkgs (flake.lock for the flake, nix/sources.json for default.nix) must pin
// the same tree. Checked by this code AND by real nix: the hash encodings, the fixed-output store
// path each pin implies, flake.lock as nix itself reads it, and the eval-time guard in outputs.nix.
import test from "ava";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { comparePins, FLAKE_FEATURES, fromNixBase32, fromSri, nix, readPins, REPO, toNixBase32 } from "./nixfiles";

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

test("flake.lock and nix/sources.json pin the same nixpkgs (rev, date, branch, url, NAR hash)", (t) => {
  const { lock, sources } = readPins();
  t.deepEqual(comparePins(lock, sources), []);
});

test("the comparison catches either pin edited alone, naming the field", (t) => {
  const { lock, sources } = readPins();
  const otherRev = "0123456789abcdef0123456789abcdef01234567";
  const cases: [string, (l: typeof lock, s: typeof sources) => void, RegExp][] = [
    ["sources rev", (_l, s) => (s.nixpkgs.rev = otherRev), /^rev: /],
    ["lock rev", (l) => (l.nodes.nixpkgs.locked!.rev = otherRev), /^rev: /],
    ["sources sha256, one digit", (_l, s) => (s.nixpkgs.sha256 = s.nixpkgs.sha256.replace(/^1/, "0")), /^hash: /],
    ["lock narHash", (l) => (l.nodes.nixpkgs.locked!.narHash = "sha256-" + Buffer.alloc(32, 7).toString("base64")), /^hash: /],
    ["sources url", (_l, s) => (s.nixpkgs.url = s.nixpkgs.url.replace(/[0-9a-f]{40}/, otherRev)), /^url: /],
    ["lock lastModified", (l) => (l.nodes.nixpkgs.locked!.lastModified = 1), /^lastModified: /],
    ["lock branch", (l) => (l.nodes.nixpkgs.original!.ref = "nixos-24.11"), /^branch: /],
    ["sources sha256 not base32", (_l, s) => (s.nixpkgs.sha256 = s.nixpkgs.sha256.replace(/.$/, "e")), /^hash: .*not a nix base32 digit/],
    ["lock version", (l) => (l.version = 6), /^flake\.lock: version 6/],
  ];
  for (const [name, edit, expected] of cases) {
    const l = clone(lock);
    const s = clone(sources);
    edit(l, s);
    const problems = comparePins(l, s);
    t.true(problems.length > 0, `${name}: not detected`);
    t.true(problems.some((p) => expected.test(p)), `${name}: ${JSON.stringify(problems)}`);
  }
});

test("the TypeScript hash conversion agrees with nix-hash in both directions", async (t) => {
  const { lock, sources } = readPins();
  const bytes = fromSri(String(lock.nodes.nixpkgs.locked!.narHash));
  const viaNix = await nix("nix-hash", ["--type", "sha256", "--to-base32", bytes.toString("hex")]);
  t.is(viaNix.code, 0, viaNix.stderr);
  t.is(viaNix.stdout.trim(), sources.nixpkgs.sha256);
  t.is(toNixBase32(bytes), sources.nixpkgs.sha256);
  const back = await nix("nix-hash", ["--type", "sha256", "--to-base16", sources.nixpkgs.sha256]);
  t.is(back.stdout.trim(), fromNixBase32(sources.nixpkgs.sha256, 32).toString("hex"));
  // and on bytes with every bit pattern, not just this one hash
  const random = Buffer.from(Array.from({ length: 32 }, (_v, i) => (i * 73 + 41) & 0xff));
  const r = await nix("nix-hash", ["--type", "sha256", "--to-base32", random.toString("hex")]);
  t.is(toNixBase32(random), r.stdout.trim());
  t.deepEqual(fromNixBase32(r.stdout.trim(), 32), random);
});

test("both pins name the same fixed-output store path, as nix computes it", async (t) => {
  const { lock, sources } = readPins();
  // The flake stores its input as "source"; nix/sources.nix passes name = "source" for this.
  const fromLock = await nix("nix-store", [
    "--print-fixed-path", "--recursive", "sha256",
    fromSri(String(lock.nodes.nixpkgs.locked!.narHash)).toString("hex"), "source",
  ]);
  const fromSources = await nix("nix-store", ["--print-fixed-path", "--recursive", "sha256", sources.nixpkgs.sha256, "source"]);
  t.is(fromLock.code, 0, fromLock.stderr);
  t.is(fromSources.code, 0, fromSources.stderr);
  t.regex(fromLock.stdout.trim(), /^\/nix\/store\/[0-9a-z]{32}-source$/);
  t.is(fromSources.stdout.trim(), fromLock.stdout.trim());
  t.regex(fs.readFileSync(path.join(REPO, "nix/sources.nix"), "utf8"), /name = "source";/);
});

test("nix accepts flake.lock for flake.nix as it is, offline; an input edited in flake.nix alone is refused", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nix-flake-lock-"));
  try {
    fs.copyFileSync(path.join(REPO, "flake.nix"), path.join(dir, "flake.nix"));
    fs.copyFileSync(path.join(REPO, "flake.lock"), path.join(dir, "flake.lock"));
    const args = [...FLAKE_FEATURES, "flake", "metadata", "--json", "--no-update-lock-file", "--offline", `path:${dir}`];
    const ok = await nix("nix", args);
    t.is(ok.code, 0, ok.stderr);
    const meta = JSON.parse(ok.stdout) as { locks: { nodes: { nixpkgs: { locked: { rev: string } } } } };
    t.is(meta.locks.nodes.nixpkgs.locked.rev, readPins().sources.nixpkgs.rev);

    const flake = fs.readFileSync(path.join(dir, "flake.nix"), "utf8");
    t.true(flake.includes("github:NixOS/nixpkgs/nixos-unstable"));
    fs.writeFileSync(path.join(dir, "flake.nix"), flake.replace("nixos-unstable", "nixos-24.11"));
    const stale = await nix("nix", args);
    t.not(stale.code, 0, "a flake.lock that no longer matches flake.nix was accepted");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("outputs.nix refuses a flake input that is not the revision in nix/sources.json", async (t) => {
  const expr = (rev: string) => `(import ./nix/outputs.nix { nixpkgs = "/nonexistent-nixpkgs"; lockedRev = "${rev}"; }).pkgs`;
  const wrong = await nix("nix-instantiate", ["--eval", "-E", expr("0000000000000000000000000000000000000000")]);
  t.not(wrong.code, 0);
  t.regex(wrong.stderr, /flake\.lock pins nixpkgs 0{40} but nix\/sources\.json pins [0-9a-f]{40}/);
  // with the right revision the guard passes and evaluation goes on to import nixpkgs itself
  const right = await nix("nix-instantiate", ["--eval", "-E", expr(readPins().sources.nixpkgs.rev)]);
  t.not(right.code, 0);
  t.notRegex(right.stderr, /flake\.lock pins/);
  t.regex(right.stderr, /nonexistent-nixpkgs/);
});

test("the NixOS version stamp comes from the pin: date.nix matches the UTC date of lastModified", async (t) => {
  const { sources } = readPins();
  const stamps = [0, 951782400, 951868800, 1709164800, sources.nixpkgs.lastModified, 4102444799];
  for (const secs of stamps) {
    const r = await nix("nix-instantiate", ["--eval", "-E", `import ./nix/lib/date.nix ${secs}`]);
    t.is(r.code, 0, r.stderr);
    t.is(JSON.parse(r.stdout), new Date(secs * 1000).toISOString().slice(0, 10).replace(/-/g, ""), `at ${secs}`);
  }
  t.is(new Date(sources.nixpkgs.lastModified * 1000).toISOString().slice(0, 10), "2025-05-03");
});
