// npm run bench:pulumi — what a no-op `pulumi preview` / `pulumi up` of the demo stack costs over the
// bare minimum, measured in one run with the engine on PATH (scripts/pulumi-engine.sh):
// (a) the demo stack, in a project copy with its own file backend (test/engine/engine-helpers.ts
//     projectCopy), after one real `pulumi up` (about a minute): `preview --expect-no-changes` and
//     `up --yes --expect-no-changes`, so a run that would change anything fails the bench;
// (b) the floor: the same command on an empty Node Pulumi program (index.js with nothing in it,
//     runtime nodejs, its own backend) plus the `nix-instantiate` of the demo target that the
//     program's one invoke runs (preview and up both run it: up runs the program twice, preview
//     and update, but the floor's `up` is also a preview and an update).
// Also, for the record, (c) an empty program that only imports @pulumi/pulumi, as any program would
// without our preload (bin/pulumi-preload.js, which the demo program runs with): the SDK then loads
// the TypeScript compiler and @npmcli/arborist for its function serialization at every start.
// Runs alternate a, b, c, ... so all see the same machine load; medians. Last line is JSON.
import { execFile, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Engine, projectCopy, pulumi, ROOT } from "../test/engine/engine-helpers";

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
/** The goal: each no-op command at most this many times the floor. */
const GOAL = 1.5;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const r2 = (x: number) => Math.round(x * 100) / 100;

/** Wall-clock seconds of one `pulumi` command (fails the bench when it fails). */
function timed(e: Engine, args: string[]): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile("pulumi", ["--non-interactive", ...args], { cwd: e.dir, env: e.env, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`pulumi ${args.join(" ")} in ${e.dir} failed:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
      else resolve((performance.now() - t0) / 1000);
    });
  });
}

/** A Node Pulumi program whose index.js is `body`, with its own backend, one stack, one `up` done. */
async function emptyProgram(name: string, body: string, demo: Engine): Promise<Engine> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `bench-pulumi-${name}-`));
  const state = path.join(dir, ".state");
  fs.mkdirSync(state);
  fs.writeFileSync(path.join(dir, "Pulumi.yaml"), `name: ${name}\nruntime:\n  name: nodejs\n  options:\n    typescript: false\n`);
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name, private: true, main: "index.js" }));
  fs.writeFileSync(path.join(dir, "index.js"), body);
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
  const e = { dir, state, env: { ...demo.env, PULUMI_BACKEND_URL: `file://${state}` } };
  await pulumi(e, ["stack", "init", "bench"]);
  await pulumi(e, ["up", "--yes", "--stack", "bench"]);
  return e;
}

async function main(): Promise<void> {
  const demo = projectCopy("bench-pulumi-demo-");
  const dirs = [demo.dir];
  try {
    await pulumi(demo, ["stack", "init", "demo"]);
    const t0 = performance.now();
    await pulumi(demo, ["up", "--yes", "--stack", "demo"]);
    console.error(`bench:pulumi: first pulumi up of the demo stack (runs every step): ${r2((performance.now() - t0) / 1000)} s`);
    const empty = await emptyProgram("empty", "// An empty Pulumi program.\n", demo);
    const sdk = await emptyProgram("sdk-only", 'require("@pulumi/pulumi");\n', demo);
    dirs.push(empty.dir, sdk.dir);

    // The demo target, as the program's invoke instantiates it (stacks/Pulumi.demo.yaml: demoWorld system).
    const file = path.join(demo.dir, ".supply-chain", "demo", "demo-world", "default.nix");
    const attribute = "system";
    const root = path.join(empty.dir, "target.drv");
    const nixInstantiate = (): number => {
      const t = performance.now();
      const r = spawnSync("nix-instantiate", [file, "-A", attribute, "--add-root", root], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`nix-instantiate ${file} -A ${attribute} failed: ${r.stderr}`);
      return (performance.now() - t) / 1000;
    };

    // One untimed round warms the file caches of every side alike.
    await timed(demo, ["preview", "--stack", "demo", "--expect-no-changes"]);
    await timed(empty, ["preview", "--stack", "bench", "--expect-no-changes"]);
    await timed(sdk, ["preview", "--stack", "bench", "--expect-no-changes"]);
    nixInstantiate();

    const s = { demoPreview: [] as number[], demoUp: [] as number[], emptyPreview: [] as number[], emptyUp: [] as number[], sdkPreview: [] as number[], sdkUp: [] as number[], nix: [] as number[] };
    for (let i = 0; i < RUNS; i++) {
      s.demoPreview.push(await timed(demo, ["preview", "--stack", "demo", "--expect-no-changes"]));
      s.emptyPreview.push(await timed(empty, ["preview", "--stack", "bench", "--expect-no-changes"]));
      s.sdkPreview.push(await timed(sdk, ["preview", "--stack", "bench", "--expect-no-changes"]));
      s.nix.push(nixInstantiate());
      s.demoUp.push(await timed(demo, ["up", "--yes", "--stack", "demo", "--expect-no-changes"]));
      s.emptyUp.push(await timed(empty, ["up", "--yes", "--stack", "bench", "--expect-no-changes"]));
      s.sdkUp.push(await timed(sdk, ["up", "--yes", "--stack", "bench", "--expect-no-changes"]));
      console.error(
        `bench:pulumi: run ${i + 1}/${RUNS}: preview demo ${r2(s.demoPreview[i])} s, empty ${r2(s.emptyPreview[i])} s, sdk-only ${r2(s.sdkPreview[i])} s; ` +
          `up demo ${r2(s.demoUp[i])} s, empty ${r2(s.emptyUp[i])} s, sdk-only ${r2(s.sdkUp[i])} s; nix-instantiate ${s.nix[i].toFixed(3)} s`,
      );
    }
    const m = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, median(v)])) as Record<keyof typeof s, number>;
    const floor = { preview: m.emptyPreview + m.nix, up: m.emptyUp + m.nix };
    const ratioVsFloor = { preview: r2(m.demoPreview / floor.preview), up: r2(m.demoUp / floor.up) };
    console.log(
      JSON.stringify({
        demo: { previewSeconds: r2(m.demoPreview), upSeconds: r2(m.demoUp) },
        floor: { previewSeconds: r2(floor.preview), upSeconds: r2(floor.up), emptyPreviewSeconds: r2(m.emptyPreview), emptyUpSeconds: r2(m.emptyUp), nixInstantiateSeconds: Math.round(m.nix * 1000) / 1000 },
        sdkOnly: { previewSeconds: r2(m.sdkPreview), upSeconds: r2(m.sdkUp) },
        ratioVsFloor,
        ratioVsSdkOnly: { preview: r2(m.demoPreview / (m.sdkPreview + m.nix)), up: r2(m.demoUp / (m.sdkUp + m.nix)) },
        goal: { ratioVsFloor: { preview: GOAL, up: GOAL } },
        met: { preview: ratioVsFloor.preview <= GOAL, up: ratioVsFloor.up <= GOAL },
        runs: RUNS,
      }),
    );
  } finally {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench:pulumi: ${e.message}`);
  process.exit(1);
});
