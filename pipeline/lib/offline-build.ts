// The offline rebuild's shared parts: the isolated script (rebuild.sh), its environment and the one
// way a step runs it (runRebuildScript), the post-run checks that publish a rebuild (collectStaged),
// and the result every reader of a rebuild reads. Used by the rebuild, collect-rebuild and audit steps and by the Pulumi docker route.
import * as fs from "node:fs";
import * as path from "node:path";
import { CheckFailed, InputError, log } from "./step";
import { writeJsonAtomic } from "./files";
import { Backend, IsolatedResult, runIsolated } from "./isolation";
import { buildCounter } from "./progress";
import { DerivationGraph, isFixedOutput } from "./derivation";
import { NixTarget } from "./nix";
import { narHashOfFile } from "./nar-diff";
import { localFlakeDir } from "./eval-inputs";
import { BUILDER_TOOLS, BuilderRecord, machinesSpec, openBuilderTunnels, RemoteBuilder, storeUri } from "./builders";
import { diskFullIn, TOOL_PACKAGES } from "./proc";

/** A completed rebuild's result file, written last: <out>/rebuild.json. */
export const REBUILD_RESULT = "rebuild.json";
/** <out>/.closure-<random>: the private copy of the closure a run checks and imports. */
export const STAGED_CLOSURE_PREFIX = ".closure-";

export interface RebuiltPath {
  path: string;
  narHash: string;
  /** The rebuilt NAR, under <out>/nars. */
  nar: string;
}

export interface RebuildResult {
  isolation: Backend;
  image?: string;
  /** bwrap's system root (`--nix-root`): the rebuild ran that root's Nix, not the host's. */
  nixRoot?: string;
  /** The version the Nix inside the isolation reported (`nix-store --version`). */
  nixVersion: string | null;
  /** The Nix remote builders the build could send derivations to, if any: each store URI and the host key
   * that was required of it (base64), what a signed provenance records of them. */
  builders?: BuilderRecord[];
  network: { interfaces: string[] };
  drvPath: string;
  outPath: string;
  narHash: string;
  paths: RebuiltPath[];
  log: string;
  out: string;
  nars: string;
  /** Unique per run; verify checks it against <out>/rebuild.json so a stale copy is refused. */
  runId: string;
  /** The closure as the caller named it, and the SHA-256 (hex) of the bytes that were imported. */
  closure: string;
  closureSha256: string | null;
  sourceCheck: { checked: number } | null;
  seconds: number;
}

/** The isolated script (pipeline/lib/rebuild.sh), passed as text so any runner of a container runs it as is. */
export const REBUILD_SCRIPT = fs.readFileSync(path.join(__dirname, "rebuild.sh"), "utf8");

export type RebuildPhase = "import" | "eval" | "build";

export interface RebuildEnvOptions {
  closure: string;
  entry: string;
  attribute: string;
  drvPath: string;
  isolation: Backend;
  phases?: RebuildPhase[];
  dumpGraph?: boolean;
  flake?: string;
  /** Nix remote builders (their URIs and machinesSpec), reached through the tunnels' ssh config (lib/builders.ts). */
  builders?: { uris: string[]; stores: string[]; spec: string; sshConfig: string };
  /** Nix's max-jobs inside (0: every build on a remote builder). */
  maxJobs?: number;
}

/** The environment REBUILD_SCRIPT expects (the step's and the Pulumi container's). */
export function rebuildEnv(o: RebuildEnvOptions): Record<string, string> {
  return {
    // nixos/nix keeps its nix in these profiles (its image PATH, which this replaces).
    PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/root/.nix-profile/bin:/nix/var/nix/profiles/default/bin",
    SC_CLOSURE: o.closure,
    SC_FILE: o.entry,
    SC_ATTR: o.attribute,
    SC_DRV: o.drvPath,
    // Docker's default seccomp profile forbids the user namespace Nix's sandbox needs: there the
    // container (no network, no host files) is the sandbox.
    SC_SANDBOX: o.isolation === "bwrap" ? "true" : "false",
    SC_PHASES: (o.phases ?? ["import", "eval", "build"]).join(" "),
    SC_DUMP_GRAPH: o.dumpGraph ? "1" : "0",
    // A flake reference with its attribute (path:/checkout#image) instead of SC_FILE/SC_ATTR.
    SC_FLAKE: o.flake ?? "",
    SC_FLAKE_REF: (o.flake ?? "").replace(/#.*$/, ""),
    SC_BUILDERS: o.builders?.spec ?? "",
    SC_BUILDER_URIS: o.builders?.uris.join(" ") ?? "",
    SC_BUILDER_STORES: o.builders?.stores.join(" ") ?? "",
    SC_MAX_JOBS: o.maxJobs === undefined ? "" : String(o.maxJobs),
    ...(o.builders ? { NIX_SSHOPTS: `-F ${o.builders.sshConfig}` } : {}),
  };
}

/** One isolated run of REBUILD_SCRIPT (the rebuild step's, the audit's two). */
export interface RebuildScriptRun {
  /** The rebuildEnv options: which phases, which closure and target. Its `isolation` is the backend. */
  env: RebuildEnvOptions;
  image?: string;
  /** Host paths the script reads (the checkout, the closure), visible read-only. */
  readOnly: string[];
  /** The run's work dir: the script is written here as inner.sh and gets it as its one argument. */
  work: string;
  /** A /nix that outlives one run (the audit's store), instead of an empty one. */
  nixDir?: string;
  /** bwrap's system root (`--nix-root`). */
  systemRoot?: string;
  /** Nix remote builders for the build phase, each reached through a forwarded socket (lib/builders.ts). */
  builders?: RemoteBuilder[];
  logFile: string;
  owner: string;
  label: string;
}

/** Runs REBUILD_SCRIPT once, isolated: inner.sh in the work dir, rebuildEnv's environment, output to the log file. */
export async function runRebuildScript(r: RebuildScriptRun): Promise<IsolatedResult> {
  const script = path.join(r.work, "inner.sh");
  fs.writeFileSync(script, REBUILD_SCRIPT);
  const builders = r.builders?.length ? r.builders : undefined;
  if (builders) checkBuilderSystem(r.env.isolation, r.systemRoot);
  const tunnels = builders ? await openBuilderTunnels(builders) : undefined;
  try {
    return await runIsolated({
      backend: r.env.isolation,
      image: r.image,
      readOnly: [...new Set([...r.readOnly, ...(tunnels?.readOnly ?? [])])],
      workDir: r.work,
      nixDir: r.nixDir,
      systemRoot: r.systemRoot,
      script,
      args: [r.work],
      env: rebuildEnv({ ...r.env, ...(tunnels ? { builders: { uris: builders!.map((b) => b.uri), stores: builders!.map(storeUri), spec: machinesSpec(builders!), sshConfig: tunnels.sshConfig } } : {}) }),
      logFile: r.logFile,
      owner: r.owner,
      label: r.label,
      // derivations built of how many, from Nix's own lines: a rebuild of a real image is hours.
      onOutput: buildCounter(),
    });
  } finally {
    await tunnels?.close();
  }
}

/**
 * A failed isolated run that is the machine refusing (exit 2), not a verdict on the sources; the error names
 * the log. Undefined for a verdict. The machine: the isolation killed by a signal this step did not send (the
 * OOM killer, another process: the step's own interruptions never get here), a remote builder that could not
 * be used, a full disk or quota. The disk is read from the log, so a failing builder that prints the same
 * text also ends as exit 2: no verdict either way, never a "yes".
 */
export function machineFault(res: IsolatedResult, logText: string, out: string, log: string): InputError | undefined {
  if (res.signal) return new InputError(`the isolated run was killed by ${res.signal} from outside this step (the OOM killer, or another process; log ${log})`);
  const builder = builderFault(logText);
  if (builder) return new InputError(`${builder} (log ${log})`);
  // Policy warn must not tolerate a full disk as if the sources had failed.
  const full = diskFullIn(logText);
  if (full) return new InputError(`${full.reason} (${full.code}, the isolated rebuild writing under ${out}; log ${log})`);
  return undefined;
}

/**
 * The remote builder that kept a failed isolated build from running (none took a derivation, or one
 * holds an output it cannot delete; REBUILD_SCRIPT exit 94): which one and why. Undefined when a
 * derivation's builder failed: that is a verdict on the sources, not a machine refusing.
 */
function builderFault(logText: string): string | undefined {
  if (/builder for '[^']+\.drv' failed/.test(logText)) return undefined;
  const held = /^error: (remote builder \S+ holds .*)$/m.exec(logText);
  if (held) return held[1];
  const asked = /^error: remote builder (\S+) could not be used: (.*)$/m.exec(logText);
  const building = /cannot build on '([^']+)': (.*)/.exec(logText);
  const which = asked ?? building;
  if (!which) return undefined;
  const why = /Host key verification failed/.test(logText) ? "its host key is not the one given (ssh: Host key verification failed)" : which[2].trim();
  return `remote builder ${which[1]} could not be used: ${why}`;
}

/** Remote builders are reached from bwrap (a socket bound in; the Docker route has none) by the ssh and
 * socat of the system the script runs: the host's, or the `--nix-root`'s. */
export function checkBuilderSystem(isolation: Backend, systemRoot: string | undefined): void {
  if (isolation !== "bwrap") throw new InputError("remote builders need --isolation bwrap (the docker isolation cannot reach them)");
  const root = systemRoot ?? "";
  const missing = BUILDER_TOOLS.filter((t) => !["/usr/bin/", "/bin/"].some((d) => fs.existsSync(root + d + t)));
  if (missing.length) {
    throw new InputError(systemRoot
      ? `remote builders: --nix-root ${systemRoot} has no ${missing.join(", ")} (scripts/nix-rootfs.sh --builder makes one with both)`
      : `remote builders: ${missing.join(", ")} not found in /usr/bin (${missing.map((t) => TOOL_PACKAGES[t] ?? t).join(", ")})`);
  }
}

/**
 * What REBUILD_SCRIPT evaluates and the isolation sees of the target: the checkout directory (mounted
 * read-only) and rebuildEnv's entry and attribute, or the flake. A flake must be a local one: the
 * isolation has no network, and it is the checkout that is evaluated.
 */
export function isolatedTarget(t: NixTarget, step: string): { dir: string; env: { entry: string; attribute: string; flake?: string } } {
  if (t.flake !== undefined) {
    const dir = localFlakeDir(t.flake);
    if (!dir) throw new InputError(`--flake ${t.flake} is not a local flake (path:/dir#attr): the ${step} evaluates your checkout`);
    if (!fs.existsSync(dir)) throw new InputError(`--flake ${t.flake}: ${dir} does not exist`);
    return { dir, env: { entry: "", attribute: "", flake: t.flake } };
  }
  const file = path.resolve(t.file);
  const isDir = fs.statSync(file).isDirectory();
  return { dir: isDir ? file : path.dirname(file), env: { entry: isDir ? path.join(file, "default.nix") : file, attribute: t.attribute } };
}

export function rebuildRefused(reason: string, result: Record<string, unknown>): never {
  throw new CheckFailed(reason, { ok: false, reason, ...result });
}

export function readLines(f: string): string[] {
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").map((l) => l.trim()).filter(Boolean) : [];
}

/** `--nix-root` is bwrap's (a docker image is its own system) and must hold a Nix. */
export function checkNixRoot(isolation: Backend, nixRoot: string | undefined): void {
  if (nixRoot === undefined) return;
  if (isolation !== "bwrap") throw new InputError(`--nix-root is for --isolation bwrap only (a docker image brings its own Nix)`);
  if (!fs.existsSync(path.join(nixRoot, "usr", "bin", "nix-store"))) throw new InputError(`--nix-root ${nixRoot} has no /usr/bin/nix-store (build one with scripts/nix-rootfs.sh)`);
}

/** The non-fixed-output outputs of the graph: what an offline rebuild must build and compare. */
export function expectedOutputs(graph: DerivationGraph): string[] {
  const built = new Set<string>();
  for (const d of graph.drvs.values()) if (!isFixedOutput(d)) for (const x of Object.values(d.outputs)) if (x.path) built.add(x.path);
  return [...built].sort();
}


export interface StagedRebuild {
  /** The staging dir REBUILD_SCRIPT ran in (removed on success). */
  work: string;
  out: string;
  drvPath: string;
  graph: DerivationGraph;
  isolation: Backend;
  image?: string;
  nixRoot?: string;
  builders?: BuilderRecord[];
  closure: string;
  closureSha256: string | null;
  sourceCheck: { checked: number } | null;
  runId: string;
  started: number;
  log: string;
}

/**
 * Checks what REBUILD_SCRIPT left after a successful run and publishes it: loopback only inside; no
 * path of the target's graph or the closure already in the image's store before the import; no
 * build output imported with the closure (it would not have been rebuilt); no source that did not
 * come from the closure; every expected output built; each NAR re-hashed. Then nars/ moves in place
 * and rebuild.json (the completion marker) is written last.
 */
export async function collectStaged(s: StagedRebuild): Promise<RebuildResult> {
  const { work, out, drvPath, graph } = s;
  const interfaces = readLines(path.join(work, "interfaces"));
  const base = { isolation: s.isolation, image: s.image, network: { interfaces }, drvPath, log: s.log, out };
  if (!interfaces.length) rebuildRefused(`no record of the network interfaces inside the isolation (log ${s.log})`, base);
  if (interfaces.some((i) => i !== "lo")) rebuildRefused(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside`, base);
  const expected = expectedOutputs(graph);
  const imported = new Set(readLines(path.join(work, "imported")));
  // Checked again here (the script refuses first): nothing of the target's graph or the closure may
  // have been in the image's store before the import.
  if (!fs.existsSync(path.join(work, "store-before"))) rebuildRefused(`no record of the store's contents before the import (log ${s.log})`, base);
  const before = new Set(readLines(path.join(work, "store-before")).map((n) => `${graph.storeDir}/${n}`));
  if (before.size) {
    const graphPaths = [...imported];
    for (const d of graph.drvs.values()) graphPaths.push(d.drvPath, ...d.inputSrcs, ...Object.values(d.outputs).flatMap((x) => (x.path ? [x.path] : [])));
    const pre = graphPaths.find((p) => before.has(p));
    if (pre) rebuildRefused(`${pre} of the target's graph was in the image's store before the import: it would not be rebuilt or not come from the closure`, base);
  }
  const smuggled = expected.filter((p) => imported.has(p));
  if (smuggled.length) rebuildRefused(`the closure carries build output ${smuggled[0]}${smuggled.length > 1 ? ` (and ${smuggled.length - 1} more)` : ""}: it was not rebuilt from sources`, base);
  const fodOuts = new Set<string>();
  for (const d of graph.drvs.values()) if (isFixedOutput(d)) for (const x of Object.values(d.outputs)) if (x.path) fodOuts.add(x.path);
  const hashes = new Map(readLines(path.join(work, "hashes")).map((l) => l.split(" ") as [string, string]));
  for (const p of hashes.keys()) {
    if (fodOuts.has(p)) rebuildRefused(`source ${p} was not in the closure but appeared in the store during the offline build`, base);
    if (!expected.includes(p)) rebuildRefused(`the offline build produced ${p}, which is not an output of the graph of ${drvPath}`, base);
  }
  const outPath = readLines(path.join(work, "outpath"))[0];
  const nixVersion = readLines(path.join(work, "nix-version"))[0]?.split(" ").pop() ?? null;
  const narsDir = path.join(out, "nars");
  const paths: RebuiltPath[] = [];
  for (const p of expected) {
    const h = hashes.get(p);
    if (!h) rebuildRefused(`the offline build did not produce ${p}`, base);
    const stagedNar = path.join(work, "nars", `${path.basename(p)}.nar`);
    const actual = await narHashOfFile(stagedNar);
    if (actual !== h) rebuildRefused(`NAR of ${p} copied out of the isolation has hash ${actual}, Nix reported ${h}`, base);
    paths.push({ path: p, narHash: h, nar: path.join(narsDir, `${path.basename(p)}.nar`) });
  }
  const top = paths.find((x) => x.path === outPath);
  if (!top) rebuildRefused(`the built output ${outPath} is not an output of ${drvPath}`, base);

  fs.mkdirSync(out, { recursive: true });
  fs.rmSync(path.join(out, REBUILD_RESULT), { force: true });
  fs.rmSync(narsDir, { recursive: true, force: true });
  fs.renameSync(path.join(work, "nars"), narsDir);
  fs.rmSync(work, { recursive: true, force: true });
  const result: RebuildResult = {
    isolation: s.isolation,
    ...(s.image ? { image: s.image } : {}),
    ...(s.nixRoot ? { nixRoot: s.nixRoot } : {}),
    nixVersion,
    ...(s.builders?.length ? { builders: s.builders } : {}),
    network: { interfaces },
    drvPath,
    outPath,
    narHash: top!.narHash,
    paths,
    log: s.log,
    out,
    nars: narsDir,
    runId: s.runId,
    closure: s.closure,
    closureSha256: s.closureSha256,
    sourceCheck: s.sourceCheck,
    seconds: Math.round((Date.now() - s.started) / 100) / 10,
  };
  writeJsonAtomic(path.join(out, REBUILD_RESULT), result);
  log("rebuild", `rebuilt ${paths.length} paths offline; interfaces inside: ${interfaces.join(", ")}`);
  return result;
}

