// npm run bench:hash: re-hashing and exporting a closure of real size. A synthetic target whose fixed-output
// sources total BENCH_HASH_BYTES (default 2.25e9: over 2 GiB) — a few big tarballs, many small ones, some
// unpacked trees (recursive) — seeded in the store with `nix-store --add-fixed` as bench/closure.ts does, so
// nothing builds. Measured in the same run, interleaved, best of BENCH_REPS (default 3):
//   (a) `supply-chain check-closure` (the CLI as a user runs it: start-up, evaluation, re-hashing every source)
//       against `sha256sum` of the same closure file; the check's peak RSS (GNU time's %M);
//   (b) `supply-chain closure` (evaluation, export, its digest, fsync, reports) against `nix-store --export`
//       of the same paths into a file, and against that export plus an fsync of its file (the durability the
//       step gives its file). The CPU time (user + system, GNU time) of both, and of the file's SHA-256 alone
//       (Node's crypto, as the step hashes), show what the step does beyond the export on the machine's cores.
// Generation and seeding are not timed; the sources are cached under $TMPDIR/hash-bench-v1-<bytes> (store
// paths checked valid on reuse). Last line: the JSON verdict.
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const BYTES = Number(process.env.BENCH_HASH_BYTES ?? 2.25e9);
const REPS = Number(process.env.BENCH_REPS ?? 3);
const GOALS = { ratioVsSha256sum: 1.0, peakRssMB: 200, exportRatio: 1.1 };
const CLI = path.join(__dirname, "..", "bin", "supply-chain.js");
const ENV = { ...process.env, NIX_CONFIG: `${process.env.NIX_CONFIG ?? ""}\nsubstituters =\n` };

const r3 = (x: number) => Math.round(x * 1000) / 1000;
function say(m: string): void {
  process.stderr.write(`[bench:hash ${new Date().toISOString().slice(11, 19)}] ${m} (load ${os.loadavg().map((x) => x.toFixed(2)).join(" ")})\n`);
}

/** sh() under GNU time: also the CPU seconds (user + system) and the peak RSS (MB) of the command and its children. */
function shTimed(cmd: string, args: string[]): { stdout: string; seconds: number; cpu: number; maxRssMB: number } {
  const r = sh("/usr/bin/time", ["-f", "cpu %U %S maxrss-kib %M", cmd, ...args]);
  const m = /cpu ([\d.]+) ([\d.]+) maxrss-kib (\d+)\s*$/.exec(r.stderr);
  if (!m) throw new Error(`no figures from GNU time for ${cmd}: ${r.stderr.slice(-300)}`);
  return { stdout: r.stdout, seconds: r.seconds, cpu: Number(m[1]) + Number(m[2]), maxRssMB: Number(m[3]) / 1024 };
}

function sh(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv } = {}): { stdout: string; stderr: string; seconds: number } {
  const t = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: "utf8", maxBuffer: 1 << 28, env: o.env ?? ENV });
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 4).join(" ")} failed (${r.status}): ${r.stderr.slice(-1500)}`);
  return { stdout: r.stdout, stderr: r.stderr, seconds };
}

interface Source {
  name: string;
  mode: "flat" | "recursive";
  size: number;
}

/** Deterministic sizes: 40 tarballs of harmonically falling size, 8 unpacked trees, 200 small files. */
function plan(total: number): Source[] {
  const big: Source[] = [];
  for (let i = 0; i < 48; i++) big.push({ name: i < 40 ? `src-${i}.tar.xz` : `tree-${i}`, mode: i < 40 ? "flat" : "recursive", size: 0 });
  const small: Source[] = Array.from({ length: 200 }, (_, i) => ({ name: `small-${i}.patch`, mode: "flat" as const, size: 4096 + ((i * 7919) % 60000) }));
  const rest = total - small.reduce((n, s) => n + s.size, 0);
  const w = big.map((_, i) => 1 / (i + 2));
  const sum = w.reduce((a, b) => a + b, 0);
  big.forEach((s, i) => (s.size = Math.floor((rest * w[i]) / sum)));
  return [...big, ...small];
}

/** Writes `size` pseudo-random bytes to `file` (1 MiB at a time), returning their sha256 (hex). */
function writeRandom(file: string, size: number): string {
  const h = crypto.createHash("sha256");
  const fd = fs.openSync(file, "w");
  const buf = Buffer.allocUnsafe(1 << 20);
  for (let left = size; left > 0; ) {
    const n = Math.min(left, buf.length);
    crypto.randomFillSync(buf, 0, n);
    fs.writeSync(fd, buf, 0, n);
    h.update(buf.subarray(0, n));
    left -= n;
  }
  fs.closeSync(fd);
  return h.digest("hex");
}

const NIX_FILE = `let
  sources = builtins.fromJSON (builtins.readFile ./sources.json);
  fod = s: derivation {
    inherit (s) name;
    system = "x86_64-linux";
    builder = "builtin:fetchurl";
    url = "file:///nonexistent/\${s.name}";
    outputHashMode = s.mode;
    outputHashAlgo = "sha256";
    outputHash = s.hash;
  };
in {
  image = derivation { name = "image"; system = "x86_64-linux"; builder = "/bin/sh"; srcs = map fod sources; };
}
`;

function prepare(): { file: string; paths: string[] } {
  const dir = path.join(os.tmpdir(), `hash-bench-v1-${BYTES}`);
  const file = path.join(dir, "default.nix");
  const ready = path.join(dir, ".ready");
  if (fs.existsSync(ready)) {
    const paths = fs.readFileSync(ready, "utf8").trim().split("\n");
    if (spawnSync("nix-store", ["--check-validity", ...paths]).status === 0) return { file, paths };
    say(`cached sources in ${dir} are no longer all in the store: generating again`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const gen = path.join(dir, "gen");
  const sources = plan(BYTES);
  say(`generating ${sources.length} sources, ${(BYTES / 1e9).toFixed(2)} GB, in ${gen}`);
  const entries: { name: string; mode: string; hash: string }[] = [];
  const paths: string[] = [];
  for (const s of sources) {
    const at = path.join(gen, s.name);
    if (s.mode === "flat") {
      fs.mkdirSync(gen, { recursive: true });
      const hash = writeRandom(at, s.size);
      paths.push(sh("nix-store", ["--add-fixed", "sha256", at]).stdout.trim());
      entries.push({ name: s.name, mode: "flat", hash });
    } else {
      // An unpacked tree: 16 files in two directories, a symlink, one executable.
      fs.mkdirSync(path.join(at, "lib"), { recursive: true });
      for (let k = 0; k < 16; k++) writeRandom(path.join(at, k < 8 ? "lib" : "", `part-${k}`), Math.floor(s.size / 16));
      fs.chmodSync(path.join(at, "part-8"), 0o755);
      fs.symlinkSync("lib/part-0", path.join(at, "link"));
      const p = sh("nix-store", ["--add-fixed", "--recursive", "sha256", at]).stdout.trim();
      paths.push(p);
      entries.push({ name: s.name, mode: "recursive", hash: sh("nix-store", ["-q", "--hash", p]).stdout.trim().replace(/^sha256:/, "") });
    }
    fs.rmSync(at, { recursive: true, force: true });
  }
  fs.writeFileSync(path.join(dir, "sources.json"), JSON.stringify(entries));
  fs.writeFileSync(file, NIX_FILE);
  // The pipeline's build step has instantiated the target before closure and check-closure run.
  sh("nix-instantiate", [file, "-A", "image"]);
  fs.writeFileSync(ready, paths.join("\n") + "\n");
  return { file, paths };
}

const node = (args: string[]) => [process.execPath, CLI, ...args];

/**
 * Removes a previous run's output and syncs its file system, untimed, so that every timed run starts
 * alike. This machine's root file system is mounted with `discard`: freeing a 2.25 GB file discards its
 * blocks at the next journal commit, which otherwise lands in whichever timed run comes next.
 */
function removeSettled(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
  sh("sync", ["-f", path.dirname(p)]);
}

function main(): void {
  for (const tool of ["nix-store", "nix-instantiate", "sha256sum", "/usr/bin/time", "sync"]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) throw new Error(`missing tool '${tool}' (run scripts/setup.sh)`);
  }
  say(`start`);
  const { file, paths } = prepare();
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "hash-bench-out-"));
  try {
    const closureDir = path.join(out, "closure");
    const target = ["--file", file, "--attribute", "image"];
    // Untimed: warms the CLI's transpile cache and checks the closure and its digest.
    const first = JSON.parse(sh(process.execPath, node(["closure", ...target, "--offline", "--out", closureDir]).slice(1)).stdout);
    const closure: string = first.closureFile;
    const manifest = JSON.parse(fs.readFileSync(first.manifest, "utf8"));
    const exported: string[] = [...manifest.sources, ...manifest.evalPaths, ...manifest.pinnedInputs].map((s: any) => s.path);
    if (exported.length !== paths.length) throw new Error(`the closure has ${exported.length} paths, ${paths.length} were seeded`);
    const bytes = fs.statSync(closure).size;
    const digest = sh("sha256sum", [closure]).stdout.split(" ")[0];
    if (digest !== first.closureSha256) throw new Error(`closure's digest ${first.closureSha256} is not sha256sum's ${digest}`);
    say(`closure: ${exported.length} paths, ${(bytes / 1e9).toFixed(2)} GB, digest checked against sha256sum`);

    const t = { check: [] as number[], sha256sum: [] as number[], closure: [] as number[], nixExport: [] as number[], nixExportFsync: [] as number[] };
    const rss: number[] = [];
    const cpu = { closure: [] as number[], nixExport: [] as number[], digest: [] as number[] };
    const baseline = path.join(out, "baseline.closure");
    const scenarios: [keyof typeof t, () => number][] = [
      ["check", () => {
        const [cmd, ...args] = node(["check-closure", ...target, "--closure", closure]);
        const r = shTimed(cmd, args);
        const v = JSON.parse(r.stdout);
        if (!v.ok || v.checked !== exported.length) throw new Error(`check-closure: ${r.stdout.slice(0, 400)}`);
        rss.push(r.maxRssMB);
        return r.seconds;
      }],
      ["sha256sum", () => sh("sha256sum", [closure]).seconds],
      ["closure", () => {
        // As the baselines' file below: the previous run's closure goes first, untimed (replacing it inside the
        // timed run freed its 2.25 GB at the rename, about 0.5 s the baselines never paid).
        removeSettled(closureDir);
        const r = shTimed(process.execPath, node(["closure", ...target, "--offline", "--out", closureDir]).slice(1));
        if (JSON.parse(r.stdout).closureSha256 !== digest) throw new Error("closure: another digest");
        cpu.closure.push(r.cpu);
        return r.seconds;
      }],
      ["nixExport", () => {
        removeSettled(baseline);
        const r = shTimed("sh", ["-c", 'f="$1"; shift; nix-store --export "$@" > "$f"', "sh", baseline, ...exported]);
        cpu.nixExport.push(r.cpu);
        return r.seconds;
      }],
      ["nixExportFsync", () => {
        removeSettled(baseline);
        return sh("sh", ["-c", 'f="$1"; shift; nix-store --export "$@" > "$f" && sync "$f"', "sh", baseline, ...exported]).seconds;
      }],
    ];
    // Untimed for the ratios: the digest the step computes besides the export, alone (from the page cache).
    const hashFile = "const h=require('crypto').createHash('sha256'),fs=require('fs'),b=Buffer.allocUnsafe(1<<20),fd=fs.openSync(process.argv[1]);" +
      "for(let n;(n=fs.readSync(fd,b))>0;)h.update(b.subarray(0,n));process.stdout.write(h.digest('hex'))";
    for (let i = 0; i < REPS; i++) {
      const d = shTimed(process.execPath, ["-e", hashFile, closure]);
      if (d.stdout !== digest) throw new Error("the digest alone: another digest");
      cpu.digest.push(d.cpu);
      // Alternating the order: whatever runs first or second in a round does not always fall to one side.
      for (const [k, f] of i % 2 ? [...scenarios].reverse() : scenarios) t[k].push(f());
      say(`rep ${i + 1}/${REPS}: check-closure ${t.check[i].toFixed(2)} s (peak RSS ${rss[i].toFixed(0)} MB) vs sha256sum ${t.sha256sum[i].toFixed(2)} s; closure ${t.closure[i].toFixed(2)} s vs nix-store --export ${t.nixExport[i].toFixed(2)} s (with fsync ${t.nixExportFsync[i].toFixed(2)} s); CPU: closure ${cpu.closure[i].toFixed(2)} s, export ${cpu.nixExport[i].toFixed(2)} s, the digest alone ${cpu.digest[i].toFixed(2)} s`);
    }
    const best = (xs: number[]) => Math.min(...xs);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const result = {
      paths: exported.length,
      closureBytes: bytes,
      checkSeconds: r3(best(t.check)),
      sha256sumSeconds: r3(best(t.sha256sum)),
      ratioVsSha256sum: r3(best(t.check) / best(t.sha256sum)),
      medianRatioVsSha256sum: r3(median(t.check) / median(t.sha256sum)),
      checkPeakRssMB: Math.round(Math.max(...rss)),
      closureSeconds: r3(best(t.closure)),
      nixStoreExportSeconds: r3(best(t.nixExport)),
      nixStoreExportFsyncSeconds: r3(best(t.nixExportFsync)),
      exportRatio: r3(best(t.closure) / best(t.nixExport)),
      exportRatioVsExportFsync: r3(best(t.closure) / best(t.nixExportFsync)),
      closureCpuSeconds: r3(median(cpu.closure)),
      nixStoreExportCpuSeconds: r3(median(cpu.nixExport)),
      digestCpuSeconds: r3(median(cpu.digest)),
      goals: GOALS,
      met: {
        ratioVsSha256sum: best(t.check) / best(t.sha256sum) <= GOALS.ratioVsSha256sum,
        peakRssMB: Math.max(...rss) <= GOALS.peakRssMB,
        exportRatio: best(t.closure) / best(t.nixExport) <= GOALS.exportRatio,
      },
      reps: REPS,
      cores: os.availableParallelism(),
      loadAverage: os.loadavg().map(r3),
    };
    say(`done`);
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

main();
