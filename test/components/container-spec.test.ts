// The docker Container the Rebuild component declares cannot run through Pulumi here (the docker
// provider is Terraform-bridged and not buildable), so its exact spec (containerSpec: image, no
// network, mounts, entrypoint, command, env) is run on a real, private Docker engine with the
// locally built rebuilder image, then collected and verified like the component does.
import test from "ava";
import { dockerRunArgs } from "../../pipeline/lib/isolation";
import { execFile, execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { containerSpec, ContainerSpecInput } from "../../pipeline/components/rebuild";
import { cli, closureOf, demoWorld, DemoWorld, ENV, requireTool, rm, ROOT } from "../steps/rebuild-helpers";

let w: DemoWorld;
let closure: string;
let engineDir: string;
let env: NodeJS.ProcessEnv;
let image: string;
let drvPath: string;

test.before(async () => {
  requireTool("docker");
  requireTool("dockerd");
  engineDir = fs.mkdtempSync(path.join(os.tmpdir(), "sc-spec-"));
  const host = execFileSync("bash", [path.join(ROOT, "scripts", "dockerd.sh"), "--private", engineDir], { encoding: "utf8" }).trim();
  env = { ...ENV, DOCKER_HOST: host };
  image = JSON.parse(execFileSync("bash", [path.join(ROOT, "pipeline", "rebuilder-image", "build.sh")], { env, encoding: "utf8" }).trim()).image;
  w = await demoWorld("sc-spec-world-");
  closure = await closureOf(w, w.attribute, "closure");
  drvPath = execFileSync("nix-instantiate", [w.file, "-A", w.attribute], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
});

test.after.always(() => {
  if (engineDir) {
    execFileSync("bash", [path.join(ROOT, "scripts", "dockerd.sh"), "--stop", engineDir], { stdio: "inherit" });
    rm(engineDir);
  }
  if (w) rm(w.dir);
});

/** `docker run` with exactly the Container resource's arguments (the CLI route's own translation). */
function runSpec(s: ReturnType<typeof containerSpec>, name: string): Promise<{ code: number; logs: string }> {
  const a = ["run", "--name", name, ...dockerRunArgs(s)];
  return new Promise((resolve) => {
    execFile("docker", a, { env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      execFileSync("docker", ["rm", "-f", name], { env, stdio: "ignore" });
      resolve({ code: err ? ((err as any).code ?? 1) : 0, logs: stdout + stderr });
    });
  });
}

function spec(over: Partial<ContainerSpecInput> & { work: string }) {
  return containerSpec({
    image,
    closureFile: closure,
    nixDir: path.dirname(w.file),
    entry: w.file,
    attribute: w.attribute,
    drvPath,
    closureSha256: "x",
    ...over,
  });
}

test.serial("(real Docker, spec of the mocked Container) the rebuild container has only loopback, cannot write its inputs, and its rebuild verifies", async (t) => {
  const work = path.join(w.dir, "out", "container");
  fs.mkdirSync(work, { recursive: true });
  const s = spec({ work });
  t.is(s.networkMode, "none");
  const r = await runSpec(s, "sc-spec-ok");
  t.is(r.code, 0, r.logs.slice(-3000));
  t.deepEqual(fs.readFileSync(path.join(work, "interfaces"), "utf8").trim().split("\n"), ["lo"]);

  // The read-only mounts are read-only inside the same spec.
  const probe = { ...s, command: ["-c", `echo x 2>/dev/null >> ${closure} && echo WROTE closure; touch ${path.dirname(w.file)}/x 2>/dev/null && echo WROTE sources; touch ${work}/x && echo WROTE work`] };
  const ro = await runSpec(probe, "sc-spec-ro");
  t.is(ro.code, 0, ro.logs);
  t.notRegex(ro.logs, /WROTE (closure|sources)/);
  t.regex(ro.logs, /WROTE work/, "the work dir is the one writable mount");

  const collectArgs = ["collect-rebuild", "--work", work, "--out", path.join(w.dir, "out"), "--drv-path", drvPath, "--closure", closure, "--closure-sha256", "c".repeat(64), "--image", image];
  const collected = execFileSync(process.execPath, [path.join(ROOT, "bin", "supply-chain.js"), ...collectArgs], { cwd: ROOT, encoding: "utf8" });
  const rebuilt = JSON.parse(collected);
  t.is(rebuilt.isolation, "docker");
  t.true(rebuilt.paths.length >= 3);
  const v = await cli(["verify", "--file", w.file, "--attribute", w.attribute, "--rebuilt", path.join(w.dir, "out", "rebuild.json")], env);
  t.is(v.code, 0, v.stderr.slice(-3000));
  t.true(v.json.reproducible);
});

test.serial("(real Docker, spec of the mocked Container) a closure that does not build the reviewed target exits non-zero (what the component's exitCode check fails on)", async (t) => {
  const work = path.join(w.dir, "out2", "container");
  fs.mkdirSync(work, { recursive: true });
  const r = await runSpec(spec({ work, drvPath: "/nix/store/00000000000000000000000000000000-other.drv" }), "sc-spec-bad");
  t.is(r.code, 91, r.logs.slice(-2000));
  t.regex(r.logs, /evaluate to .* inside the isolation/);
});
