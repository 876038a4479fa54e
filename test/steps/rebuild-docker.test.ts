// The Docker backend against a real, private Docker engine (scripts/dockerd.sh --private: its own
// data root and socket, stopped afterwards) and the locally built rebuilder image (no registry).
import test from "ava";
import { execFileSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cli, closureOf, demoWorld, DemoWorld, ENV, requireTool, rm, ROOT } from "./rebuild-helpers";

let w: DemoWorld;
let closure: string;
let engineDir: string;
let env: NodeJS.ProcessEnv;
let image: string;

test.before(async () => {
  requireTool("docker", "docker.io");
  requireTool("dockerd", "docker.io");
  engineDir = fs.mkdtempSync(path.join(os.tmpdir(), "rbdk-"));
  const host = execFileSync("bash", [path.join(ROOT, "scripts", "dockerd.sh"), "--private", engineDir], { encoding: "utf8" }).trim();
  env = { ...ENV, DOCKER_HOST: host };
  const built = JSON.parse(execFileSync("bash", [path.join(ROOT, "pipeline", "rebuilder-image", "build.sh")], { env, encoding: "utf8" }).trim());
  image = built.image;
  w = await demoWorld("rebuild-docker-test-");
  closure = await closureOf(w, w.attribute, "closure");
});

test.after.always(() => {
  if (engineDir) {
    execFileSync("bash", [path.join(ROOT, "scripts", "dockerd.sh"), "--stop", engineDir], { stdio: "inherit" });
    rm(engineDir);
  }
  if (w) rm(w.dir);
});

function containers(): string[] {
  return execFileSync("docker", ["ps", "-aq", "--filter", "label=supply-chain.rebuild"], { env, encoding: "utf8" }).split("\n").filter(Boolean);
}

test.serial("docker: the image rebuilt offline in a --network=none container of the local image, verify finds every path identical", async (t) => {
  const out = path.join(w.dir, "rb-docker");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", image, "--out", out], env);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.is(r.json.isolation, "docker");
  t.is(r.json.image, image);
  t.deepEqual(r.json.network.interfaces, ["lo"]);
  t.true(r.json.paths.length >= 3);
  t.regex(fs.readFileSync(r.json.log, "utf8"), /--network=none/);
  t.deepEqual(containers(), [], "the container is gone");

  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")], env);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.matched, r.json.paths.length);
});

test.serial("docker: a rebuild killed half-way leaves no accepted result; the re-run removes the orphaned container and completes", async (t) => {
  const out = path.join(w.dir, "rb-docker-killed");
  const args = ["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", image, "--out", out];
  const child = spawn(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...args], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
  let seen = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`never saw a build start: ${seen.slice(-2000)}`)), 300_000);
    child.stderr.on("data", (d) => {
      seen += d;
      if (/building '\/nix\/store\/[^']*linux[^']*\.drv'/.test(seen)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  process.kill(-child.pid!, "SIGKILL"); // no chance to clean up: the container outlives its client
  await new Promise((r) => child.on("close", r));
  t.false(fs.existsSync(path.join(out, "rebuild.json")));
  t.is(containers().length, 1, "the killed client's container is still there");

  const again = await cli(args, env);
  t.is(again.code, 0, again.stderr.slice(-3000));
  t.deepEqual(containers(), []);
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")], env);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
});

test("docker: an image whose /nix/store is not empty is refused (the store must start empty)", async (t) => {
  const tag = `sc-nonempty-store:${process.pid}`;
  const cid = execFileSync("docker", ["create", image, "/bin/sh"], { env, encoding: "utf8" }).trim();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "rb-store-"));
  fs.mkdirSync(path.join(tmp, "store", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-prefilled"), { recursive: true });
  execFileSync("docker", ["cp", path.join(tmp, "store"), `${cid}:/nix/`], { env });
  execFileSync("docker", ["commit", cid, tag], { env });
  execFileSync("docker", ["rm", cid], { env });
  rm(tmp);
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", tag, "--out", path.join(w.dir, "rb-nonempty")], env);
  t.is(r.code, 1, r.stderr.slice(-2000));
  t.regex(r.stderr, /\/nix\/store is not empty/);
  t.false(fs.existsSync(path.join(w.dir, "rb-nonempty", "rebuild.json")));
});
