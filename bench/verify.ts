// npm run bench:verify — verify at a real image's scale: a wide graph of BENCH_VERIFY_PATHS (default
// 2000) leaf derivations of BENCH_VERIFY_KIB KiB each (default 256) under one root, built from the demo
// world's busybox, exported, rebuilt offline in bubblewrap; then the `verify` step (CLI start, the
// graph, the store's queries, re-hashing every rebuilt NAR, comparing) against the floor measured in
// the same run: hashing those rebuilt NARs once with `sha256sum` (one process for all of them; the
// in-process loop with the function verify uses is reported beside it).
// Best of BENCH_REPS (default 3). Last line: JSON with both times and the ratio (goal ≤ 1.2).
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { narHashOfFile } from "../pipeline/lib/nar-diff";
import { wideGraphNix } from "../test/helpers/wide-graph";

const PATHS = Number(process.env.BENCH_VERIFY_PATHS ?? 2000);
const KIB = Number(process.env.BENCH_VERIFY_KIB ?? 256);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const GOAL = 1.2;
const BIN = path.join(__dirname, "..", "bin", "supply-chain.js");
const ENV = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\nmax-jobs = 2\n` };

function say(m: string): void {
  process.stderr.write(`[bench:verify] ${m}\n`);
}

function step(args: string[]): any {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: ENV, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`supply-chain ${args[0]} failed (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout);
}


async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "bench-verify-"));
  try {
    step(["demo-world", path.join(tmp, "world")]);
    const file = path.join(tmp, "wide.nix");
    // PATHS leaves of deterministic bytes (`yes <name> | head -c`) and a root that references them all.
    fs.writeFileSync(file, wideGraphNix({ world: "./world/default.nix", leaves: PATHS, leaf: `\${sh} yes \${name} | \${sh} head -c ${KIB * 1024} > $out` }));
    const target = ["--file", file, "--attribute", "wide"];
    let t = performance.now();
    say(`building ${PATHS} leaves of ${KIB} KiB and their root`);
    step(["build", ...target, "--offline"]);
    say(`built in ${((performance.now() - t) / 1000).toFixed(1)} s; exporting the sources and rebuilding offline`);
    const c = step(["closure", ...target, "--offline", "--out", path.join(tmp, "closure")]);
    t = performance.now();
    const r = step(["rebuild", ...target, "--closure", c.closureFile, "--isolation", "bwrap", "--out", path.join(tmp, "rebuild")]);
    say(`rebuilt ${r.paths.length} paths in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    if (r.paths.length < PATHS) throw new Error(`the rebuild has ${r.paths.length} paths, fewer than the ${PATHS} asked for`);

    const verifyRuns: number[] = [];
    const hashRuns: number[] = [];
    const sha256sumRuns: number[] = [];
    const listFile = path.join(tmp, "nars.txt");
    fs.writeFileSync(listFile, r.paths.map((p: any) => p.nar).join("\n") + "\n");
    for (let i = 0; i < REPS; i++) {
      // Alternating which goes first: both read the same NARs, whichever runs second finds them cached.
      const runs: [() => Promise<void>, number[]][] = [
        [async () => {
          const v = step(["verify", ...target, "--rebuilt", path.join(tmp, "rebuild", "rebuild.json")]);
          if (!v.reproducible || v.checked !== r.paths.length) throw new Error(`verify: ${JSON.stringify(v).slice(0, 300)}`);
        }, verifyRuns],
        [async () => {
          for (const p of r.paths) if ((await narHashOfFile(p.nar)) !== p.narHash) throw new Error(`${p.nar}: hash differs`);
        }, hashRuns],
        [async () => {
          const s = spawnSync("sh", ["-c", 'xargs sha256sum < "$1" | wc -l', "sh", listFile], { encoding: "utf8" });
          if (s.status !== 0 || Number(s.stdout.trim()) !== r.paths.length) throw new Error(`sha256sum: ${s.stderr}`);
        }, sha256sumRuns],
      ];
      for (const [f, into] of i % 2 ? runs.reverse() : runs) {
        const t0 = performance.now();
        await f();
        into.push((performance.now() - t0) / 1000);
      }
      say(`rep ${i + 1}/${REPS}: verify ${verifyRuns[i].toFixed(2)} s; hashing the NARs once: sha256sum ${sha256sumRuns[i].toFixed(2)} s, in-process ${hashRuns[i].toFixed(2)} s`);
    }
    const verifySeconds = Math.min(...verifyRuns);
    const hashOnceSeconds = Math.min(...sha256sumRuns);
    const inProcessHashSeconds = Math.min(...hashRuns);
    const ratio = verifySeconds / hashOnceSeconds;
    const bytes = r.paths.reduce((n: number, p: any) => n + fs.statSync(p.nar).size, 0);
    console.log(JSON.stringify({ paths: r.paths.length, narBytes: bytes, verifySeconds: +verifySeconds.toFixed(3), hashOnceSeconds: +hashOnceSeconds.toFixed(3), inProcessHashSeconds: +inProcessHashSeconds.toFixed(3), ratio: +ratio.toFixed(3), goal: { ratio: GOAL }, met: ratio <= GOAL, reps: REPS }));
  } finally {
    spawnSync("chmod", ["-R", "u+w", tmp]);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench:verify: ${e.message}`);
  process.exit(1);
});
