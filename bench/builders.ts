// npm run bench:builders — Nix's own distributed builds under the offline rebuild: BENCH_LEAVES
// (default 16) independent derivations of equal cost under one root, rebuilt offline in bwrap with
// --max-jobs 0 (every build on a builder), once with one remote builder and once with two (each
// allowed one job), builder test hosts made by scripts/nix-builder.sh. Each run evaluates a fresh
// salt, so no builder finds anything already built. Runs alternate (one, two, one, two, ...) over
// BENCH_REPS (default 2); medians. Both sides pay the same import and evaluation.
// The work of a leaf (BENCH_WORK): `sleep` (default: BENCH_LEAF_SECONDS of wall time on the builder,
// so the two test hosts are not capped by this machine's two shared cores, as separate machines
// would not be) or `cpu` (hashing busybox's zeros for about as long: honest only on an idle machine
// with a core per builder). Last line: JSON with both times and speedupTwoBuilders (goal >= 1.7).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { startBuilders } from "../test/helpers/builders";
import { wideGraphNix } from "../test/helpers/wide-graph";

const LEAVES = Number(process.env.BENCH_LEAVES ?? 16);
const REPS = Number(process.env.BENCH_REPS ?? 2);
const WORK = process.env.BENCH_WORK ?? "sleep";
const LEAF_SECONDS = Number(process.env.BENCH_LEAF_SECONDS ?? 3);
const GOAL = 1.7;
const BIN = path.join(__dirname, "..", "bin", "supply-chain.js");
const ENV = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\n` };

function say(m: string): void {
  process.stderr.write(`[bench:builders ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
}

function step(args: string[]): any {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`supply-chain ${args[0]} failed (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The leaves' command: the same cost for each, different bytes (its name) in each output. */
function leafWork(): string {
  if (WORK === "sleep") return `\${sh} sleep ${LEAF_SECONDS}`;
  if (WORK === "cpu") return `\${sh} head -c ${LEAF_SECONDS * 150}000000 /dev/zero | \${sh} sha256sum > /dev/null`;
  throw new Error(`BENCH_WORK=${WORK}: expected sleep or cpu`);
}


async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bench-builders-"));
  let stop = () => {};
  try {
    say(`${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`);
    const world = step(["demo-world", path.join(tmp, "world")]);
    const worldDir = path.dirname(world.file);
    let salt = 0;
    /** A copy of the graph with its own salt: new derivations that no store has built. */
    const freshTarget = () => {
      const file = path.join(worldDir, `wide-${++salt}.nix`);
      fs.writeFileSync(file, wideGraphNix({ world: "./default.nix", leaves: LEAVES, leaf: `${leafWork()}; echo \${salt} \${name} > $out`, salt: `run-${salt}-${process.pid}` }));
      return ["--file", file, "--attribute", "wide"];
    };
    say("exporting the graph's sources (the demo world's busybox)");
    const closure = step(["closure", ...freshTarget(), "--offline", "--out", path.join(tmp, "closure")]).closureFile;
    const b = await startBuilders(path.join(tmp, "builders"), 2, { firstIndex: 201, prefix: "bench" });
    stop = b.stop;
    const specs: Record<"one" | "two", string> = { one: b.builders[0].line, two: b.spec };
    const times: Record<"one" | "two", number[]> = { one: [], two: [] };
    const split: number[][] = [];
    for (let rep = 0; rep < REPS; rep++) {
      for (const which of rep % 2 ? (["two", "one"] as const) : (["one", "two"] as const)) {
        const before = b.builders.map((x) => x.built().length);
        const t0 = performance.now();
        const r = step(["rebuild", ...freshTarget(), "--closure", closure, "--isolation", "bwrap", "--out", path.join(tmp, `rb-${salt}`), "--builders", specs[which], "--max-jobs", "0"]);
        const secs = (performance.now() - t0) / 1000;
        const counts = b.builders.map((x, i) => x.built().length - before[i]);
        if (counts.reduce((a, c) => a + c, 0) !== LEAVES + 1) throw new Error(`the builders' logs show ${counts.join("+")} builds, expected ${LEAVES + 1}`);
        if (which === "two") split.push(counts);
        times[which].push(secs);
        say(`rep ${rep + 1}/${REPS}: ${which === "one" ? "one builder" : "two builders"}: ${secs.toFixed(1)} s, ${r.paths.length} paths, builds per builder ${counts.join(" / ")}`);
      }
    }
    const one = median(times.one);
    const two = median(times.two);
    const speedup = one / two;
    console.log(JSON.stringify({
      leaves: LEAVES,
      work: WORK,
      leafSeconds: LEAF_SECONDS,
      oneBuilderSeconds: +one.toFixed(2),
      twoBuildersSeconds: +two.toFixed(2),
      speedupTwoBuilders: +speedup.toFixed(2),
      goal: { speedupTwoBuilders: GOAL },
      met: speedup >= GOAL,
      buildsPerBuilderWithTwo: split,
      reps: REPS,
      loadAverage: os.loadavg().map((l) => +l.toFixed(2)),
    }));
  } finally {
    stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench:builders: ${e.message}`);
  process.exit(1);
});
