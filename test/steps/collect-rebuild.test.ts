// `supply-chain collect-rebuild` (collectStaged behind the Pulumi docker route): what the rebuild
// container left is only accepted when the isolation held, nothing of the target was in the image's
// store before the import, and every NAR is the one Nix reported. A real derivation built by the
// host's nix stands in for the container's build; the container's files are written here.
import test from "ava";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");
const ENV = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\n` };

interface Built {
  dir: string;
  drv: string;
  p: string;
  hash: string;
}

/** A one-output derivation unique to this test, built on the host. */
function built(t: { teardown(fn: () => void): void }): Built {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-collect-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const expr = `derivation { name = "collected"; system = builtins.currentSystem; builder = "/bin/sh"; args = [ "-c" "echo ${path.basename(dir)} > $out" ]; }`;
  const nix = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  const drv = nix("nix-instantiate", ["-E", expr]);
  const p = nix("nix-store", ["--realise", drv, "--option", "sandbox", "false"]);
  return { dir, drv, p, hash: nix("nix-store", ["-q", "--hash", p]) };
}

function work(b: Built, o: { interfaces?: string; hash?: string; storeBefore?: string[] } = {}): string {
  const w = path.join(b.dir, "container");
  fs.mkdirSync(path.join(w, "nars"), { recursive: true });
  fs.writeFileSync(path.join(w, "interfaces"), o.interfaces ?? "lo\n");
  fs.writeFileSync(path.join(w, "store-before"), (o.storeBefore ?? []).map((n) => `${n}\n`).join(""));
  fs.writeFileSync(path.join(w, "imported"), "");
  fs.writeFileSync(path.join(w, "outpath"), `${b.p}\n`);
  fs.writeFileSync(path.join(w, "hashes"), `${b.p} ${o.hash ?? b.hash}\n`);
  fs.writeFileSync(path.join(w, "nars", `${path.basename(b.p)}.nar`), execFileSync("nix-store", ["--dump", b.p]));
  return w;
}

function collect(w: string, out: string, drv: string) {
  const args = ["collect-rebuild", "--work", w, "--out", out, "--drv-path", drv, "--closure", "/c/closure", "--closure-sha256", "c".repeat(64), "--image", "img@sha256:" + "0".repeat(64)];
  const r = spawnSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { cwd: ROOT, env: ENV, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("accepts a container run with only loopback whose NARs match (the image's store held unrelated paths): writes rebuild.json for verify", (t) => {
  const b = built(t);
  const out = path.join(b.dir, "out");
  const r = collect(work(b, { storeBefore: ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nix-2.8.0", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-bash-5.1"] }), out, b.drv);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.is(j.isolation, "docker");
  t.is(j.narHash, b.hash);
  t.deepEqual(j.network.interfaces, ["lo"]);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, "rebuild.json"), "utf8")).runId, j.runId);
  t.true(fs.existsSync(j.paths[0].nar));
});

test("refuses a run that saw a network interface besides loopback", (t) => {
  const b = built(t);
  const r = collect(work(b, { interfaces: "lo\neth0\n" }), path.join(b.dir, "out"), b.drv);
  t.is(r.code, 1);
  t.regex(r.stderr, /isolation is broken: network interfaces lo, eth0/);
  t.false(fs.existsSync(path.join(b.dir, "out", "rebuild.json")));
});

test("refuses a NAR that is not the one Nix reported", (t) => {
  const b = built(t);
  const r = collect(work(b, { hash: "sha256:0000000000000000000000000000000000000000000000000000" }), path.join(b.dir, "out"), b.drv);
  t.is(r.code, 1);
  t.regex(r.stderr, /copied out of the isolation has hash sha256:\w+, Nix reported sha256:0000/);
});

test("refuses a run whose image already had an output of the target in its store", (t) => {
  const b = built(t);
  const r = collect(work(b, { storeBefore: ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nix-2.8.0", path.basename(b.p)] }), path.join(b.dir, "out"), b.drv);
  t.is(r.code, 1);
  t.true(r.stderr.includes(`${b.p} of the target's graph was in the image's store before the import`), r.stderr);
  t.false(fs.existsSync(path.join(b.dir, "out", "rebuild.json")));
});

test("refuses a run that left no record of the store before the import", (t) => {
  const b = built(t);
  const w = work(b);
  fs.rmSync(path.join(w, "store-before"));
  const r = collect(w, path.join(b.dir, "out"), b.drv);
  t.is(r.code, 1);
  t.regex(r.stderr, /no record of the store's contents before the import/);
});
