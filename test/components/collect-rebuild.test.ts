// collect-rebuild: what the docker rebuild container left is only accepted when the isolation held
// and every NAR is the one Nix reported. Real nix-store NARs; the container's files are written here.
import test from "ava";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ROOT = path.resolve(__dirname, "..", "..");

function storePath(t: { teardown(fn: () => void): void }): { dir: string; p: string; hash: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-collect-"));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const src = path.join(dir, "payload");
  fs.writeFileSync(src, `collected ${path.basename(dir)}\n`);
  const p = execFileSync("nix-store", ["--add", src], { encoding: "utf8" }).trim();
  const hash = execFileSync("nix-store", ["-q", "--hash", p], { encoding: "utf8" }).trim();
  return { dir, p, hash };
}

function work(dir: string, p: string, hash: string, interfaces: string): string {
  const w = path.join(dir, "container");
  fs.mkdirSync(path.join(w, "nars"), { recursive: true });
  fs.writeFileSync(path.join(w, "interfaces"), interfaces);
  fs.writeFileSync(path.join(w, "outpath"), `${p}\n`);
  fs.writeFileSync(path.join(w, "hashes"), `${p} ${hash}\n`);
  fs.writeFileSync(path.join(w, "nars", `${path.basename(p)}.nar`), execFileSync("nix-store", ["--dump", p]));
  return w;
}

function collect(w: string, out: string) {
  const r = spawnSync(process.execPath, ["-r", "ts-node/register/transpile-only", "pipeline/components/collect-rebuild.ts", w, out, "/nix/store/x-target.drv", "/c/closure", "img@sha256:" + "0".repeat(64)], { cwd: ROOT, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("accepts a container run with only loopback whose NARs match: writes rebuild.json for verify", (t) => {
  const { dir, p, hash } = storePath(t);
  const out = path.join(dir, "out");
  const r = collect(work(dir, p, hash, "lo\n"), out);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.is(j.isolation, "docker");
  t.is(j.narHash, hash);
  t.deepEqual(j.network.interfaces, ["lo"]);
  t.deepEqual(JSON.parse(fs.readFileSync(path.join(out, "rebuild.json"), "utf8")).runId, j.runId);
  t.true(fs.existsSync(j.paths[0].nar));
});

test("refuses a run that saw a network interface besides loopback", (t) => {
  const { dir, p, hash } = storePath(t);
  const r = collect(work(dir, p, hash, "lo\neth0\n"), path.join(dir, "out"));
  t.is(r.code, 1);
  t.regex(r.stderr, /isolation is broken: network interfaces lo, eth0/);
  t.false(fs.existsSync(path.join(dir, "out", "rebuild.json")));
});

test("refuses a NAR that is not the one Nix reported", (t) => {
  const { dir, p } = storePath(t);
  const r = collect(work(dir, p, "sha256:0000000000000000000000000000000000000000000000000000", "lo\n"), path.join(dir, "out"));
  t.is(r.code, 1);
  t.regex(r.stderr, /copied out of the container has hash sha256:\w+, Nix reported sha256:0000/);
});
