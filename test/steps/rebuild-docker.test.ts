// The Docker backend against a real, private Docker engine (scripts/dockerd.sh --private: its own
// data root and socket, stopped afterwards) and the locally built rebuilder image (no registry).
import test from "ava";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cli, closureOf, demoWorld, DemoWorld, ENV, exportedPaths, requireTool, rm, ROOT, killMidBuild } from "./rebuild-helpers";
import { demoSourceCache, hostSecret, probeIsolation } from "../helpers/visibility";

let w: DemoWorld;
let closure: string;
let engineDir: string;
let env: NodeJS.ProcessEnv;
let image: string;

test.before(async () => {
  requireTool("docker");
  requireTool("dockerd");
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

test.serial("docker: the audit runs in a --network=none container with an empty /nix of its own and reproduces the signed provenance", async (t) => {
  // The publisher's side, here on the host: build, verify (the docker rebuild above), attest.
  const build = await cli(["build", "--file", w.file, "--attribute", w.attribute, "--offline"], env);
  t.is(build.code, 0, build.stderr.slice(-2000));
  fs.writeFileSync(path.join(w.dir, "build.json"), build.stdout);
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(w.dir, "rb-docker", "rebuild.json")], env);
  fs.writeFileSync(path.join(w.dir, "verify.json"), v.stdout);
  const keys = await cli(["keygen", "--out", path.join(w.dir, "keys")], env);
  const att = await cli(["attest", "--build", path.join(w.dir, "build.json"), "--closure", path.dirname(closure), "--verify", path.join(w.dir, "verify.json"), "--key", keys.json.privateKey, "--out", path.join(w.dir, "attest")], env);
  t.is(att.code, 0, att.stderr.slice(-2000));
  const out = path.join(w.dir, "audit-docker");
  const r = await cli(["audit", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--attestation", att.json.provenance, "--public-key", keys.json.publicKey, "--isolation", "docker", "--image", image, "--out", out], env);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.true(r.json.reproduced);
  t.deepEqual(r.json.interfaces, ["lo"]);
  t.is(r.json.matched, r.json.checked);
  t.regex(fs.readFileSync(path.join(out, "audit.log"), "utf8"), /--network=none[^\n]*target=\/nix/);
  t.deepEqual(containers(), [], "the container is gone");
});

test.serial("docker: a rebuild killed half-way leaves no accepted result; the re-run removes the orphaned container and completes", async (t) => {
  const out = path.join(w.dir, "rb-docker-killed");
  const args = ["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", image, "--out", out];
  await killMidBuild(args, env); // no chance to clean up: the container outlives its client
  t.false(fs.existsSync(path.join(out, "rebuild.json")));
  t.is(containers().length, 1, "the killed client's container is still there");

  const again = await cli(args, env);
  t.is(again.code, 0, again.stderr.slice(-3000));
  t.deepEqual(containers(), []);
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")], env);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
});

/** A derived image: `script` run (no network) in a container of the local image, committed as `tag`. */
function derivedImage(tag: string, script: string): void {
  const name = `sc-derive-${process.pid}-${tag.replace(/\W/g, "-")}`;
  execFileSync("docker", ["run", "--name", name, "--network=none", "--entrypoint", "/bin/sh", image, "-c", script], { env, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync("docker", ["commit", name, tag], { env, stdio: "ignore" });
  execFileSync("docker", ["rm", name], { env, stdio: "ignore" });
}

function hostNix(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
}

test("docker: an image whose store already holds a path of the target's graph (an output, or a source of the closure) is refused naming it, before building", async (t) => {
  const drv = hostNix("nix-instantiate", [w.file, "-A", w.attribute]);
  const toolsDrv = hostNix("nix-store", ["-qR", drv]).split("\n").find((p) => /-demo-tools\.drv$/.test(p))!;
  const toolsOut = hostNix("nix-store", ["-q", "--outputs", toolsDrv]).split("\n")[0];
  const source = (await exportedPaths(closure))[0].path;
  for (const [kind, victim] of [["output", toolsOut], ["source", source]]) {
    const tag = `sc-prefilled-${kind}:${process.pid}`;
    // Registered as valid, as a real image's store is (Nix would otherwise just replace it).
    derivedImage(tag, `set -e; mkdir -p ${victim}; echo prefilled > ${victim}/x; printf '%s\\n\\n0\\n' ${victim} | nix-store --register-validity`);
    const out = path.join(w.dir, `rb-prefilled-${kind}`);
    const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", tag, "--out", out], env);
    t.is(r.code, 1, r.stderr.slice(-2000));
    t.true(r.stderr.includes(`${victim} of the target's graph was in the image's store before the import`), `${kind}: ${r.stderr.slice(-2000)}`);
    t.notRegex(fs.readFileSync(path.join(out, "build.log"), "utf8"), /building '/, `${kind}: nothing was built`);
    t.false(fs.existsSync(path.join(out, "rebuild.json")));
  }
});

test("docker: a nixos/nix-like image (its Nix lives in /nix/store, registered, on the profile's PATH) rebuilds and verifies", async (t) => {
  const tag = `sc-nix-in-store:${process.pid}`;
  const d = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-nix-2.8.0";
  derivedImage(
    tag,
    [
      "set -e",
      `mkdir -p ${d}/bin /nix/var/nix/profiles`,
      `mv /usr/bin/nix ${d}/bin/nix`,
      `for l in $(ls /usr/bin | grep '^nix-'); do rm /usr/bin/$l; ln -s nix ${d}/bin/$l; done`,
      `ln -s ${d} /nix/var/nix/profiles/default`,
      // Nix's build hook path is compiled in (Debian: /usr/libexec/nix/build-remote -> ../../bin/nix).
      `ln -sf ${d}/bin/nix /usr/libexec/nix/build-remote`,
      `printf '%s\\n\\n0\\n' ${d} | ${d}/bin/nix-store --register-validity`,
      "if command -v nix >/dev/null; then echo nix still on PATH; exit 1; fi",
    ].join("; "),
  );
  const out = path.join(w.dir, "rb-nix-in-store");
  const r = await cli(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", closure, "--isolation", "docker", "--image", tag, "--out", out], env);
  t.is(r.code, 0, r.stderr.slice(-3000));
  t.deepEqual(r.json.network.interfaces, ["lo"]);
  t.regex(fs.readFileSync(r.json.log, "utf8"), /into a store already holding \d+ paths of the image/);
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(out, "rebuild.json")], env);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
  t.is(v.json.matched, r.json.paths.length);
});

test.serial("docker: host files outside the mounted paths are not visible (home, /srv, the checkout, the demo world's file:// source cache); a mounted one is, read-only", async (t) => {
  const secrets = ["/root", "/srv", ROOT].map(hostSecret);
  t.teardown(() => secrets.forEach((s) => rm(s.dir)));
  const worldDir = path.dirname(w.file);
  const cache = demoSourceCache(worldDir);
  // runIsolated's docker client reads the private engine from the environment.
  const saved = process.env.DOCKER_HOST;
  process.env.DOCKER_HOST = env.DOCKER_HOST;
  t.teardown(() => (saved === undefined ? delete process.env.DOCKER_HOST : (process.env.DOCKER_HOST = saved)));
  const hidden = [...secrets.slice(1).map((s) => s.file), path.join(ROOT, "package.json"), cache];
  const seen = await probeIsolation({ backend: "docker", image, readOnly: [worldDir, secrets[0].dir], see: [...hidden, w.file, secrets[0].file], write: [secrets[0].dir] });
  for (const p of hidden) t.is(seen[p], "hidden", p);
  t.is(seen[w.file], "visible");
  t.is(seen[secrets[0].file], "visible", "the probe is not blind");
  t.is(seen[secrets[0].dir], "read-only");
});
