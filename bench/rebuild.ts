// `npm run bench:rebuild`: the offline rebuild as a user runs it — `node bin/supply-chain.js rebuild
// --isolation bwrap` (CLI start-up, the source check, closure import + isolated build + NAR dumps) — against a
// plain `nix-build` of the same graph into a fresh, empty store that fetches its sources itself
// (builtin:fetchurl from the file:// URLs), both in the same bubblewrap (empty /nix, no network,
// Nix sandbox on), in the same run, alternating which goes first, best of N (BENCH_REPS, default 3). Last line: JSON.
// On the demo stack's world, the system image (BENCH_WORLD=minimal: the small busybox one).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { runIsolated } from "../pipeline/lib/isolation";
import { checkClosure } from "../pipeline/lib/closure-check";
import { collectSources, urlsOf } from "../pipeline/lib/derivation";
import { dumpDerivations } from "../pipeline/lib/nix";

const REPS = Number(process.env.BENCH_REPS ?? 3);
const WORLD = process.env.BENCH_WORLD ?? "system";
const BIN = path.join(__dirname, "..", "bin", "supply-chain.js");
const ENV = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\n` };

function say(m: string): void {
  process.stderr.write(`[bench:rebuild] ${m}\n`);
}

/** One real CLI run (the CLI caches its type-stripped modules: the first run below warms that cache). */
function step(args: string[]): any {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`supply-chain ${args[0]} failed (exit ${r.status})`);
  return JSON.parse(r.stdout);
}

/** The baseline: nix-build in an empty store, sources fetched from their URLs (allowed into the sandbox). */
async function plainBuild(file: string, attribute: string, dir: string): Promise<void> {
  const { graph } = await dumpDerivations({ file, attribute });
  const srcDirs = new Set<string>();
  for (const d of collectSources(graph).fods) for (const u of urlsOf(d)) if (u.startsWith("file://")) srcDirs.add(path.dirname(u.slice(7)));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const script = path.join(dir, "plain.sh");
  fs.writeFileSync(
    script,
    `set -eu\nexport HOME="${dir}/home"\nnix-build "$1" -A "$2" --no-out-link --option substituters "" --option sandbox true --option build-users-group "" --option extra-sandbox-paths "$3"\n`,
  );
  const r = await runIsolated({
    backend: "bwrap",
    readOnly: [path.dirname(file), ...srcDirs],
    workDir: dir,
    script,
    args: [file, attribute, [...srcDirs].join(" ")],
    env: { PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" },
    logFile: path.join(dir, "build.log"),
    owner: dir,
  });
  const logText = fs.readFileSync(path.join(dir, "build.log"), "utf8");
  if (r.code !== 0) throw new Error(`plain nix-build failed: ${logText.slice(-2000)}`);
  // Honest baseline: every derivation, sources included, really was built in the empty store.
  const built = (logText.match(/^building '/gm) ?? []).length;
  if (built !== graph.drvs.size) throw new Error(`plain nix-build built ${built} derivations, the graph has ${graph.drvs.size}`);
}

async function timed(f: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bench-rebuild-"));
  try {
    say(`writing the demo world (${WORLD}) and its closure`);
    if (WORLD !== "system" && WORLD !== "minimal") throw new Error(`BENCH_WORLD must be system or minimal (got '${WORLD}')`);
    const made = step(["demo-world", ...(WORLD === "system" ? ["--full"] : []), path.join(tmp, "world")]);
    const w = { file: made.file as string, attribute: (WORLD === "system" ? made.systemAttribute : made.attribute) as string };
    const c = step(["closure", "--file", w.file, "--attribute", w.attribute, "--out", path.join(tmp, "closure")]);
    const sourceCheckSeconds = await timed(async () => {
      const r = await checkClosure({ file: w.file, attribute: w.attribute, closure: c.closureFile });
      if (!r.ok) throw new Error("the demo world's closure does not pass the source check");
    });
    const offline: number[] = [];
    const plain: number[] = [];
    let paths = 0;
    const runOffline = async () => {
      say("offline rebuild: supply-chain rebuild --isolation bwrap (source check + import + isolated build + NAR dumps)");
      offline.push(
        await timed(async () => {
          const r = step(["rebuild", "--file", w.file, "--attribute", w.attribute, "--closure", c.closureFile, "--isolation", "bwrap", "--out", path.join(tmp, "offline")]);
          paths = r.paths.length;
        }),
      );
    };
    const runPlain = async () => {
      say("plain nix-build into an empty store");
      plain.push(await timed(() => plainBuild(w.file, w.attribute, path.join(tmp, "plain"))));
    };
    // Alternate which goes first, so neither always meets a warmer page cache or a quieter machine.
    for (let i = 0; i < REPS; i++) {
      say(`rep ${i + 1}/${REPS}`);
      if (i % 2 === 0) {
        await runOffline();
        await runPlain();
      } else {
        await runPlain();
        await runOffline();
      }
      say(`offline ${offline[i].toFixed(2)}s, plain ${plain[i].toFixed(2)}s`);
    }
    const offlineSeconds = Math.min(...offline);
    const plainSeconds = Math.min(...plain);
    const ratio = offlineSeconds / plainSeconds;
    // The plain build checks no source hashes; the step must (docs/closure.md): its share is reported apart.
    say(`source check alone (included in offlineSeconds): ${sourceCheckSeconds.toFixed(2)}s; goal ratio <= 1.3`);
    console.log(
      JSON.stringify({
        offlineSeconds: +offlineSeconds.toFixed(3),
        plainSeconds: +plainSeconds.toFixed(3),
        ratio: +ratio.toFixed(3),
        sourceCheckSeconds: +sourceCheckSeconds.toFixed(3),
        ratioWithoutSourceCheck: +((offlineSeconds - sourceCheckSeconds) / plainSeconds).toFixed(3),
        paths,
        world: WORLD,
        closureBytes: c.bytes,
        reps: REPS,
      }),
    );
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench:rebuild failed: ${e?.stack ?? e}\n`);
  process.exit(1);
});
