// `npm run bench:closure`: the closure analysis on a synthetic derivation graph the size of a NixOS ISO
// (5,000 derivations, 1,200 fixed-output, layered like nixpkgs) and one ten times larger, against, in the
// same run, (b) the seed's method (a bash script: dump | jq, `du` per source, `nix why-depends` for the ten
// biggest) and (c) the derivation dump alone (the floor). Last line: the JSON verdict.
//
// Not timed: generation and realisation. Fixed-output sources are seeded with `nix-store --add-fixed`
// (same store path a builtin:fetchurl of the file would produce), so sizes are real and nothing builds.
// Generated worlds are cached under $TMPDIR/closure-bench-v1-<params> and reused by later runs.
//
// Each scenario is one bash script; we record wall-clock (the goals) and the CPU time of all its
// processes (`cpu`, far less sensitive to other work on the 2 shared cores). Fast scenarios: best of 5,
// interleaved; 50k: best of 3.
//
// Ours is timed as a user runs it: `node bin/supply-chain.js closure --no-export ...` (the real CLI, start-up
// included). The CLI caches each file's type-stripped output by content hash; the benchmark warms that cache
// with one untimed run first, as any second run of a user would find it.
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const ROOT = path.join(__dirname, "..");
const SYSTEM = "x86_64-linux";
const NIX = ["--extra-experimental-features", "nix-command"];

interface Graph {
  fods: { name: string; url: string; sha256: string }[];
  pkgs: { name: string; script: number; src: number; deps: number[] }[];
  roots: number[];
  scripts: number;
}

function log(msg: string): void {
  process.stderr.write(`[bench:closure ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function sh(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): { stdout: string; code: number } {
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 30, input: opts.input, stdio: ["pipe", "pipe", "pipe"] });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${args.slice(0, 6).join(" ")} failed (${r.status}): ${r.stderr.slice(-800)}`);
  return { stdout: r.stdout, code: r.status ?? -1 };
}

/** Deterministic PRNG so every run generates the same graph. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** nixpkgs-like layers: a few bootstrap packages, then wider layers depending mostly on recent layers. */
function generateGraph(dir: string, drvs: number, fodCount: number): Graph {
  const rand = rng(drvs * 31 + fodCount);
  const srcDir = path.join(dir, "sources");
  fs.mkdirSync(srcDir, { recursive: true });
  const fods: Graph["fods"] = [];
  for (let i = 0; i < fodCount; i++) {
    const name = `src-${i}.tar`;
    // Sizes spread like real tarballs: mostly small, a few big ones (what the report's top-10 is about).
    const size = Math.floor(200 + 4000 * rand() ** 3 + (i % 97 === 0 ? 200_000 * rand() : 0));
    const content = Buffer.alloc(size, `source ${i} of the closure benchmark\n`);
    const file = path.join(srcDir, name);
    fs.writeFileSync(file, content);
    fods.push({ name, url: `file://${file}`, sha256: crypto.createHash("sha256").update(content).digest("hex") });
  }
  const pkgCount = drvs - fodCount - 1;
  const layers = 30;
  const pkgs: Graph["pkgs"] = [];
  const layerStart: number[] = [];
  for (let i = 0; i < pkgCount; i++) {
    const layer = Math.min(layers - 1, Math.floor(layers * (i / pkgCount) ** 0.8));
    if (layerStart[layer] === undefined) layerStart[layer] = i;
    const deps = new Set<number>();
    if (i > 0) {
      const n = 2 + Math.floor(rand() * 5);
      for (let k = 0; k < n; k++) {
        // Mostly from the layers just below, sometimes from the bootstrap (like stdenv).
        const lo = rand() < 0.2 ? 0 : layerStart[Math.max(0, layer - 3)] ?? 0;
        const hi = layerStart[layer] > 0 ? layerStart[layer] : i;
        if (hi > lo) deps.add(lo + Math.floor(rand() * (hi - lo)));
      }
    }
    pkgs.push({ name: `pkg-${i}`, script: i % 40, src: i < fodCount ? (i * 7919) % fodCount : -1, deps: [...deps] });
  }
  const used = new Set<number>();
  for (const p of pkgs) for (const d of p.deps) used.add(d);
  const roots = pkgs.map((_, i) => i).filter((i) => !used.has(i));
  return { fods, pkgs, roots, scripts: 40 };
}

const NIX_FILE = `
let
  g = builtins.fromJSON (builtins.readFile ./graph.json);
  system = "${SYSTEM}";
  scripts = builtins.genList (s: builtins.toFile "builder-\${toString s}.sh" "echo layer builder \${toString s} > $out") g.scripts;
  fods = map (f: derivation {
    inherit (f) name url; inherit system;
    builder = "builtin:fetchurl";
    outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = f.sha256;
  }) g.fods;
  pkgs = map (p: derivation ({
    inherit (p) name; inherit system;
    builder = "/bin/sh";
    args = [ (builtins.elemAt scripts p.script) ];
    deps = map (j: builtins.elemAt pkgs j) p.deps;
  } // (if p.src >= 0 then { src = builtins.elemAt fods p.src; } else {}))) g.pkgs;
in {
  iso = derivation { name = "nixos.iso"; inherit system; builder = "/bin/sh"; deps = map (j: builtins.elemAt pkgs j) g.roots; };
}
`;

interface World {
  dir: string;
  file: string;
  drvs: number;
  fods: number;
}

function prepareWorld(drvs: number, fodCount: number): World {
  const dir = path.join(os.tmpdir(), `closure-bench-v1-${drvs}-${fodCount}`);
  const file = path.join(dir, "default.nix");
  const done = path.join(dir, ".ready");
  if (!fs.existsSync(done)) {
    log(`generating ${drvs} derivations (${fodCount} fixed-output) in ${dir}`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
    fs.chmodSync(dir, 0o755);
    const g = generateGraph(dir, drvs, fodCount);
    fs.writeFileSync(path.join(dir, "graph.json"), JSON.stringify(g));
    fs.writeFileSync(file, NIX_FILE);
    log(`seeding ${fodCount} fixed-output sources with nix-store --add-fixed`);
    const files = g.fods.map((f) => f.url.slice("file://".length));
    for (let i = 0; i < files.length; i += 500) sh("nix-store", ["--add-fixed", "sha256", ...files.slice(i, i + 500)]);
    log("instantiating (first evaluation writes the .drv files)");
    sh("nix", [...NIX, "show-derivation", "-r", "-f", file, "iso"]);
    fs.writeFileSync(done, "ok\n");
  }
  return { dir, file, drvs, fods: fodCount };
}

interface Timing {
  wall: number;
  /** user+sys CPU seconds of every process the scenario ran (bash `times`): robust to other load. */
  cpu: number;
}

const q = (x: string) => `'${x.replace(/'/g, "'\\''")}'`;

/** Runs a bash scenario (stdout discarded), returning wall-clock and children's CPU time. */
function measure(script: string): Timing {
  const t = process.hrtime.bigint();
  const r = spawnSync("bash", ["-c", `set -e\n{ ${script}\n} >/dev/null\ntimes`], { encoding: "utf8", maxBuffer: 1 << 26 });
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`scenario failed (${r.status}): ${script.slice(0, 200)}\n${r.stderr.slice(-1500)}`);
  const lines = r.stdout.trim().split("\n");
  const secs = (m: string) => {
    const x = /(\d+)m([\d.]+)s/.exec(m)!;
    return Number(x[1]) * 60 + Number(x[2]);
  };
  const [u, sys] = lines[lines.length - 1].split(" ");
  return { wall, cpu: secs(u) + secs(sys) };
}

function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

const CLI = path.join(ROOT, "bin", "supply-chain.js");
const oursScript = (w: World, out: string) => `${q(process.execPath)} ${q(CLI)} closure --file ${q(w.file)} --attribute iso --out ${q(out)} --no-export`;

const floorScript = (w: World) => `nix ${NIX.join(" ")} show-derivation -r -f ${q(w.file)} iso`;

/**
 * Not a goal, a diagnosis: the least a Node program working from the JSON dump pays — start node, spawn the same dump,
 * read it from the pipe, one JSON.parse — so the report shows how much of ratioVsFloor is Node itself.
 */
const NODE_PARSE = `const c = require("node:child_process").spawn("nix", process.argv.slice(2), { stdio: ["ignore", "pipe", "inherit"] });
const parts = []; c.stdout.setEncoding("utf8"); c.stdout.on("data", (d) => parts.push(d));
c.on("close", (code) => { JSON.parse(parts.join("")); process.exitCode = code; });
`;
const nodeParseScript = (w: World, script: string) => `${q(process.execPath)} ${q(script)} ${NIX.join(" ")} show-derivation -r -f ${q(w.file)} iso`;

/** The seed's shell method, as its script did it: dump | jq, du per source, why-depends for the top ten. */
const seedScript = (w: World, tmp: string) => `
nix ${NIX.join(" ")} show-derivation -r -f ${q(w.file)} iso > ${q(tmp)}/dump.json
jq -r 'to_entries[] | select(.value.outputs.out.hash) | "\\(.key) \\(.value.outputs.out.path)"' ${q(tmp)}/dump.json > ${q(tmp)}/fods.txt
target=$(jq -r 'keys[]' ${q(tmp)}/dump.json | grep -- '-nixos.iso.drv$')
while read -r drv out; do echo "$(du -sb "$out" | cut -f1) $drv"; done < ${q(tmp)}/fods.txt > ${q(tmp)}/sizes.txt
sort -rn ${q(tmp)}/sizes.txt | head -n 10 | while read -r size drv; do nix ${NIX.join(" ")} why-depends --derivation "$target" "$drv"; done
test "$(wc -l < ${q(tmp)}/fods.txt)" -eq ${w.fods}
`;

function main(): void {
  for (const tool of ["nix", "nix-store", "jq", "du", "bash"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`missing tool '${tool}' (run scripts/setup.sh)`);
  }
  const small = prepareWorld(5000, 1200);
  const large = prepareWorld(50000, 12000);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "closure-bench-out-"));
  // Untimed: warms the CLI's transpile cache (node_modules/.cache/supply-chain-cli) and checks our result is
  // right before its time counts.
  const check = JSON.parse(sh(process.execPath, [CLI, "closure", "--file", small.file, "--attribute", "iso", "--out", out, "--no-export"]).stdout);
  if (check.sources !== small.fods) throw new Error(`closure found ${check.sources} fixed-output sources, the generator made ${small.fods}`);

  // Interleaved repetitions, best of each: other work on the shared cores only ever adds time.
  const best = (a: Timing, b: Timing): Timing => ({ wall: Math.min(a.wall, b.wall), cpu: Math.min(a.cpu, b.cpu) });
  const none: Timing = { wall: Infinity, cpu: Infinity };
  const nodeParse = path.join(out, "node-parse.js");
  fs.writeFileSync(nodeParse, NODE_PARSE);
  let floorT = none, oursT = none, nodeT = none, floorL = none, oursL = none;
  measure(floorScript(small)); // warm-up, untimed
  for (let i = 0; i < 5; i++) {
    floorT = best(floorT, measure(floorScript(small)));
    oursT = best(oursT, measure(oursScript(small, out)));
    nodeT = best(nodeT, measure(nodeParseScript(small, nodeParse)));
  }
  const startup = timed(() => sh(process.execPath, [CLI, "closure", "--help"]));
  const seedT = measure(seedScript(small, out));
  log(`5k: floor ${floorT.wall.toFixed(2)} s (cpu ${floorT.cpu.toFixed(2)}), ours ${oursT.wall.toFixed(2)} s (cpu ${oursT.cpu.toFixed(2)}; CLI start-up ${startup.toFixed(2)} s), seed ${seedT.wall.toFixed(2)} s (cpu ${seedT.cpu.toFixed(2)}), node + dump + JSON.parse alone ${nodeT.wall.toFixed(2)} s (cpu ${nodeT.cpu.toFixed(2)})`);
  for (let i = 0; i < 3; i++) {
    floorL = best(floorL, measure(floorScript(large)));
    oursL = best(oursL, measure(oursScript(large, out)));
  }
  log(`50k: floor ${floorL.wall.toFixed(2)} s (cpu ${floorL.cpu.toFixed(2)}), ours ${oursL.wall.toFixed(2)} s (cpu ${oursL.cpu.toFixed(2)})`);
  fs.rmSync(out, { recursive: true, force: true });

  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  // The same figures in wall-clock and in CPU seconds.
  const figures = (k: keyof Timing) => ({
    oursSeconds: r3(oursT[k]),
    seedMethodSeconds: r3(seedT[k]),
    floorSeconds: r3(floorT[k]),
    ratioVsSeed: r3(seedT[k] / oursT[k]),
    ratioVsFloor: r3(oursT[k] / floorT[k]),
    scale10xRatio: r3(oursL[k] / oursT[k]),
  });
  const result = {
    drvs: small.drvs,
    fods: small.fods,
    ...figures("wall"),
    floorScale10xRatio: r3(floorL.wall / floorT.wall),
    cpu: figures("cpu"),
    startupSeconds: r3(startup),
    nodeParseSeconds: r3(nodeT.wall),
    nodeParseRatioVsFloor: r3(nodeT.wall / floorT.wall),
    loadAverage: os.loadavg().map(r3),
  };
  log(`goals: ratioVsSeed >= 10: ${result.ratioVsSeed >= 10}, ratioVsFloor <= 1.3: ${result.ratioVsFloor <= 1.3}, scale10xRatio <= 12: ${result.scale10xRatio <= 12} (load average ${result.loadAverage.join(" ")})`);
  process.stdout.write(JSON.stringify(result) + "\n");
}

main();
