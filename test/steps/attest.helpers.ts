// The real demo-world chain attest consumes: demo-world, build, closure, an offline bwrap rebuild and
// verify, each as the CLI prints it; the boot-test JSON is hand-made (a boot is tested elsewhere).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cli, OFFLINE_ENV } from "../fixtures/closure-world/world";

export interface Chain {
  dir: string;
  world: { file: string; attribute: string };
  build: any;
  buildJson: string;
  closureDir: string;
  manifest: any;
  verifyJson: string;
  bootJson: string;
  keys: { privateKey: string; publicKey: string; keyid: string };
}

function step(dir: string, name: string, args: string[]): { file: string; json: any } {
  const r = cli([name, ...args]);
  if (r.code !== 0) throw new Error(`${name} failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, r.stdout);
  return { file, json: r.json };
}

export function demoChain(prefix: string): Chain {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const world = step(dir, "demo-world", [path.join(dir, "world")]).json;
  const target = ["--file", world.file, "--attribute", world.attribute];
  const build = step(dir, "build", [...target, "--offline"]);
  const closureDir = path.join(dir, "closure");
  const closure = step(dir, "closure", [...target, "--out", closureDir]).json;
  const rebuild = step(dir, "rebuild", [...target, "--closure", closure.closureFile, "--isolation", "bwrap", "--out", path.join(dir, "rebuild")]);
  const verify = step(dir, "verify", [...target, "--rebuilt", rebuild.file]);
  const bootJson = path.join(dir, "boot-test.json");
  fs.writeFileSync(bootJson, JSON.stringify({ passed: true, accel: "tcg", bootSeconds: 3, probes: [{ name: "writer acknowledges a line", ok: true, ms: 900, detail: "OK 1" }] }));
  const keys = step(dir, "keygen", ["--out", path.join(dir, "keys")]).json;
  return { dir, world, build: build.json, buildJson: build.file, closureDir, manifest: JSON.parse(fs.readFileSync(closure.manifest, "utf8")), verifyJson: verify.file, bootJson, keys };
}

export function attestArgs(c: Chain, out: string): string[] {
  return ["attest", "--build", c.buildJson, "--closure", c.closureDir, "--verify", c.verifyJson, "--boot-test", c.bootJson, "--out", out];
}

export function payloadOf(envelopeFile: string): any {
  const e = JSON.parse(fs.readFileSync(envelopeFile, "utf8"));
  return JSON.parse(Buffer.from(e.payload, "base64").toString("utf8"));
}

export { cli, OFFLINE_ENV };
