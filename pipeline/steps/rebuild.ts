// `supply-chain rebuild`: an independent, offline rebuild of the target from the closure alone.
// Order matters: the closure's sources are re-hashed against the reviewed Nix files BEFORE anything
// is built (`nix-store --import` itself checks nothing); then, isolated (bwrap or Docker) with no
// network and a store holding none of the target's paths (empty, or only the image's own Nix), the
// closure is imported and the target built with substituters off.
// Every non-fixed-output output is dumped as a NAR into <out>/nars for `verify`.
//
// <out> is only ever complete or visibly incomplete: work happens in <out>/.staging-*, and
// <out>/rebuild.json (the completion marker, also the step's result) is removed first and written last.
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { writeJsonAtomic, writeFileAtomic } from "../lib/fsx";
import { Backend, checkBackend, runIsolated } from "../lib/isolation";
import { Derivation, DerivationGraph, isFixedOutput, urlsOf } from "../lib/derivation";
import { describeTarget, loadDerivationGraph, NixTarget, TARGET_OPTIONS, targetFrom } from "../lib/nix";
// Part of what runners without the CLI use (docs/rebuild-verify.md).
export { graphOfDrv } from "../lib/nix";
import { narHashOfFile } from "../lib/nar-diff";
import { checkClosure, describeFailure, stageClosure } from "../lib/closure-check";
import { localFlakeDir } from "../lib/eval-inputs";

const STEP = "rebuild";
export const MARKER = "rebuild.json";
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

/**
 * Runs in the isolation (POSIX sh + coreutils or busybox; no sed/awk, which nixos/nix lacks):
 * argument = the staging dir; env from `rebuildEnv`. Self-contained so any runner of a container
 * (the Pulumi docker component) runs the same script; `collectStaged` then checks and publishes what
 * it left.
 *
 * The store may hold the image's own Nix closure (nixos/nix keeps Nix in /nix/store; bwrap and our
 * local image start empty). What matters is that none of it stands in for the target: every path of
 * the target's graph (its .drv files, their outputs, the sources the closure carries) must be absent
 * before the import, or it would not be rebuilt / not come from the closure. Refused naming the path.
 */
export const REBUILD_SCRIPT = String.raw`set -eu
W="$1"
export HOME="$W/home" XDG_CACHE_HOME="$W/home/.cache" XDG_STATE_HOME="$W/home/.state" TMPDIR=/tmp
mkdir -p "$HOME" "$W/nars"
say() { echo "== rebuild [$(date +%H:%M:%S)]: $*"; }
# The phases to run (the audit runs "import eval", checks on the host, then "build" on the same store).
phase() { case " $SC_PHASES " in *" $1 "*) return 0;; esac; return 1; }
# Proof of isolation: the interfaces of this network namespace (/proc/net follows the reader's namespace).
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > "$W/interfaces"
SANDBOX="$SC_SANDBOX"
nix-store --version > "$W/nix-version"
say "network interfaces inside: $(tr '\n' ' ' < "$W/interfaces"); $(cat "$W/nix-version")"
# sandbox-fallback off: a sandbox that cannot be set up must fail the build, not silently vanish.
set -- --option substituters "" --option builders "" --option sandbox "$SANDBOX" --option sandbox-fallback false --option build-users-group "" --option fallback false
if phase import; then
  # What the image brought (names under /nix/store), recorded before anything is imported.
  ls /nix/store > "$W/store-before" 2>/dev/null || : > "$W/store-before"
  if [ -s "$W/store-before" ]; then
    say "importing $SC_CLOSURE into a store already holding $(wc -l < "$W/store-before") paths of the image"
  else
    say "importing $SC_CLOSURE into the empty store"
  fi
  nix-store "$@" --import < "$SC_CLOSURE" > "$W/imported"
  say "imported $(wc -l < "$W/imported") paths"
fi
if phase eval; then
  # -vv logs each file the evaluation reads: the store paths among them are its evaluation-time inputs.
  quiet() { grep -v -e "^evaluating file" -e "^instantiated " -e "^copied source" -e "^processing attribute" "$W/eval.log"; }
  if [ -n "$SC_FLAKE" ]; then
    # No flake registry: every input must come from flake.lock and the closure.
    set -- "$@" --extra-experimental-features "nix-command flakes" --option flake-registry /dev/null
    drv=$(nix "$@" eval --raw "$SC_FLAKE.drvPath" -vv 2>"$W/eval.log") || { quiet; exit 92; }
    nix "$@" flake archive --json --dry-run "$SC_FLAKE_REF" > "$W/archive.json"
  else
    drv=$(nix-instantiate "$@" -vv "$SC_FILE" -A "$SC_ATTR" 2>"$W/eval.log") || { quiet; exit 92; }
  fi
  if [ "$drv" != "$SC_DRV" ]; then
    echo "error: the reviewed files evaluate to $drv inside the isolation but $SC_DRV outside"
    exit 91
  fi
  echo "$drv" > "$W/drv"
  # The graph as this Nix prints it (older: show-derivation; newer: derivation show), for checks outside.
  if [ "$SC_DUMP_GRAPH" = 1 ]; then
    nix --extra-experimental-features nix-command show-derivation -r "$drv" > "$W/graph.json" 2>/dev/null ||
      nix --extra-experimental-features nix-command derivation show -r "$drv" > "$W/graph.json"
  fi
  # The target's graph: what the closure carries (import lists paths it found already valid too), the
  # .drv closure, and every output of every derivation in it.
  nix-store -qR "$drv" > "$W/drvs.tmp"
  nix-store -q --outputs $(grep '\.drv$' "$W/drvs.tmp") > "$W/outputs"
  cat "$W/imported" "$W/drvs.tmp" "$W/outputs" > "$W/graph"
  rm "$W/drvs.tmp"
  if [ -s "$W/store-before" ]; then
    hit=$(cut -d/ -f4 "$W/graph" | grep -Fx -f "$W/store-before" | head -n 1)
    if [ -n "$hit" ]; then
      echo "error: /nix/store/$hit of the target's graph was in the image's store before the import (it would not be rebuilt or not come from the closure): use an image whose store holds none of the target's paths"
      exit 93
    fi
  fi
fi
if phase build; then
  drv=$(cat "$W/drv")
  say "building $drv (sandbox $SANDBOX, substituters off)"
  nix-store "$@" --realise "$drv" > "$W/outpath"
  : > "$W/hashes.tmp"
  # Every output built here (absent before, not imported) of every derivation in the graph, not only the top.
  for p in $(cat "$W/outputs"); do
    if grep -qxF "$p" "$W/imported" || [ ! -e "$p" ]; then continue; fi
    echo "$p $(nix-store -q --hash "$p")" >> "$W/hashes.tmp"
    nix-store --dump "$p" > "$W/nars/$(basename "$p").nar"
  done
  mv "$W/hashes.tmp" "$W/hashes"
fi
say "done"
`;

/** The environment REBUILD_SCRIPT expects (the step's and the Pulumi container's). */
export function rebuildEnv(o: { closure: string; entry: string; attribute: string; drvPath: string; isolation: Backend; phases?: ("import" | "eval" | "build")[]; dumpGraph?: boolean; flake?: string }): Record<string, string> {
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
  };
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

export type OfflineBuildOptions = NixTarget & {
  /** The file that is imported (the staged copy), and what the result names: the caller's path and its digest. */
  closure: string;
  closureOrigin?: string;
  closureSha256?: string;
  isolation: Backend;
  image?: string;
  /** bwrap only: run this root file system's Nix (scripts/nix-rootfs.sh) instead of the host's. */
  nixRoot?: string;
  out: string;
  sourceCheck: { checked: number } | null;
};

function fail(reason: string, result: Record<string, unknown>): never {
  throw new CheckFailed(reason, { ok: false, reason, ...result });
}

function readLines(f: string): string[] {
  return fs.existsSync(f) ? fs.readFileSync(f, "utf8").split("\n").map((l) => l.trim()).filter(Boolean) : [];
}

/** Names the source a failed offline build was missing, from the build log and the derivation graph. */
export function explainFailure(logText: string, drvs: Map<string, Derivation>): string | undefined {
  const failed = [...logText.matchAll(/builder for '([^']+\.drv)' failed/g)].map((m) => m[1]);
  for (const f of failed) {
    const d = drvs.get(f);
    if (d && isFixedOutput(d)) {
      const out = Object.values(d.outputs)[0]?.path;
      return `source ${out} (${d.name}${urlsOf(d).length ? `, ${urlsOf(d).join(" ")}` : ""}) is not in the closure and cannot be fetched offline`;
    }
  }
  if (failed.length) return `builder for ${failed[0]} failed`;
  const err = logText.split("\n").find((l) => /^error:/.test(l.trim()));
  return err?.trim();
}

/** The isolated part of the rebuild (no source check): import, build, dump. */
export async function offlineBuild(o: OfflineBuildOptions): Promise<RebuildResult> {
  const started = Date.now();
  const iso = isolatedTarget(o, STEP);
  const closure = path.resolve(o.closure);
  const out = path.resolve(o.out);
  const nixRoot = o.nixRoot === undefined ? undefined : path.resolve(o.nixRoot);
  checkNixRoot(o.isolation, nixRoot);
  await checkBackend(o.isolation, o.image);

  const { graph, root: drvPath } = await loadDerivationGraph(o, STEP);
  const expected = expectedOutputs(graph);

  fs.mkdirSync(out, { recursive: true });
  // Not complete until the end: the marker goes first, leftovers of a killed run with it.
  fs.rmSync(path.join(out, MARKER), { force: true });
  for (const e of fs.readdirSync(out)) if (e.startsWith(".staging-")) fs.rmSync(path.join(out, e), { recursive: true, force: true });
  const runId = crypto.randomBytes(8).toString("hex");
  const work = path.join(out, `.staging-${runId}`);
  fs.mkdirSync(work);
  fs.writeFileSync(path.join(work, "inner.sh"), REBUILD_SCRIPT);
  const stagedLog = path.join(work, "build.log");
  const finalLog = path.join(out, "build.log");

  log(STEP, `offline rebuild of ${drvPath} with ${o.isolation}${o.image ? ` (${o.image})` : ""}${nixRoot ? ` on the Nix of ${nixRoot}` : ""}: ${expected.length} outputs to build`);
  const res = await runIsolated({
    backend: o.isolation,
    image: o.image,
    readOnly: [...new Set([iso.dir, closure])],
    workDir: work,
    script: path.join(work, "inner.sh"),
    args: [work],
    env: rebuildEnv({ closure, ...iso.env, drvPath, isolation: o.isolation }),
    logFile: stagedLog,
    owner: out,
    label: STEP,
    systemRoot: nixRoot,
  });
  const logText = fs.existsSync(stagedLog) ? fs.readFileSync(stagedLog, "utf8") : "";
  fs.renameSync(stagedLog, finalLog);
  if (res.code !== 0) {
    const interfaces = readLines(path.join(work, "interfaces"));
    const base = { isolation: o.isolation, image: o.image, network: { interfaces }, drvPath, log: finalLog, out };
    if (interfaces.some((i) => i !== "lo")) fail(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside`, base);
    const why = explainFailure(logText, graph.drvs) ?? `isolated build exited with ${res.code ?? res.signal}`;
    fs.rmSync(work, { recursive: true, force: true });
    // A full disk is the machine refusing (exit 2), not a verdict on the sources: policy warn must not tolerate it.
    if (/No space left on device/.test(logText)) throw new InputError(`no space left on device (ENOSPC, the isolated rebuild writing under ${out}; log ${finalLog})`);
    fail(`offline rebuild of ${drvPath} failed: ${why} (log ${finalLog})`, base);
  }
  return collectStaged({
    work,
    out,
    drvPath,
    graph,
    isolation: o.isolation,
    image: o.image,
    nixRoot,
    closure: o.closureOrigin ? path.resolve(o.closureOrigin) : closure,
    closureSha256: o.closureSha256 ?? null,
    sourceCheck: o.sourceCheck,
    runId,
    started,
    log: finalLog,
  });
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
  if (!interfaces.length) fail(`no record of the network interfaces inside the isolation (log ${s.log})`, base);
  if (interfaces.some((i) => i !== "lo")) fail(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside`, base);
  const expected = expectedOutputs(graph);
  const imported = new Set(readLines(path.join(work, "imported")));
  // Checked again here (the script refuses first): nothing of the target's graph or the closure may
  // have been in the image's store before the import.
  if (!fs.existsSync(path.join(work, "store-before"))) fail(`no record of the store's contents before the import (log ${s.log})`, base);
  const before = new Set(readLines(path.join(work, "store-before")).map((n) => `${graph.storeDir}/${n}`));
  if (before.size) {
    const graphPaths = [...imported];
    for (const d of graph.drvs.values()) graphPaths.push(d.drvPath, ...d.inputSrcs, ...Object.values(d.outputs).flatMap((x) => (x.path ? [x.path] : [])));
    const pre = graphPaths.find((p) => before.has(p));
    if (pre) fail(`${pre} of the target's graph was in the image's store before the import: it would not be rebuilt or not come from the closure`, base);
  }
  const smuggled = expected.filter((p) => imported.has(p));
  if (smuggled.length) fail(`the closure carries build output ${smuggled[0]}${smuggled.length > 1 ? ` (and ${smuggled.length - 1} more)` : ""}: it was not rebuilt from sources`, base);
  const fodOuts = new Set<string>();
  for (const d of graph.drvs.values()) if (isFixedOutput(d)) for (const x of Object.values(d.outputs)) if (x.path) fodOuts.add(x.path);
  const hashes = new Map(readLines(path.join(work, "hashes")).map((l) => l.split(" ") as [string, string]));
  for (const p of hashes.keys()) {
    if (fodOuts.has(p)) fail(`source ${p} was not in the closure but appeared in the store during the offline build`, base);
    if (!expected.includes(p)) fail(`the offline build produced ${p}, which is not an output of the graph of ${drvPath}`, base);
  }
  const outPath = readLines(path.join(work, "outpath"))[0];
  const nixVersion = readLines(path.join(work, "nix-version"))[0]?.split(" ").pop() ?? null;
  const narsDir = path.join(out, "nars");
  const paths: RebuiltPath[] = [];
  for (const p of expected) {
    const h = hashes.get(p);
    if (!h) fail(`the offline build did not produce ${p}`, base);
    const stagedNar = path.join(work, "nars", `${path.basename(p)}.nar`);
    const actual = await narHashOfFile(stagedNar);
    if (actual !== h) fail(`NAR of ${p} copied out of the isolation has hash ${actual}, Nix reported ${h}`, base);
    paths.push({ path: p, narHash: h, nar: path.join(narsDir, `${path.basename(p)}.nar`) });
  }
  const top = paths.find((x) => x.path === outPath);
  if (!top) fail(`the built output ${outPath} is not an output of ${drvPath}`, base);

  fs.mkdirSync(out, { recursive: true });
  fs.rmSync(path.join(out, MARKER), { force: true });
  fs.rmSync(narsDir, { recursive: true, force: true });
  fs.renameSync(path.join(work, "nars"), narsDir);
  fs.rmSync(work, { recursive: true, force: true });
  const result: RebuildResult = {
    isolation: s.isolation,
    ...(s.image ? { image: s.image } : {}),
    ...(s.nixRoot ? { nixRoot: s.nixRoot } : {}),
    nixVersion,
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
  writeJsonAtomic(path.join(out, MARKER), result);
  log(STEP, `rebuilt ${paths.length} paths offline; interfaces inside: ${interfaces.join(", ")}`);
  return result;
}

export const step: StepDefinition<RebuildResult> = {
  name: "rebuild",
  summary: "Rebuild the target offline from the closure alone, isolated (bwrap or Docker), after re-checking every source",
  options: {
    ...TARGET_OPTIONS,
    closure: { type: "string", description: "source closure (from `supply-chain closure`)", required: true },
    isolation: { type: "string", description: "bwrap or docker", required: true },
    image: { type: "string", description: "docker image with nix (pin by digest, e.g. nixos/nix@sha256:...); its store must hold none of the target's paths; see pipeline/rebuilder-image" },
    out: { type: "string", description: "output directory: rebuild.json (written last), build.log, nars/", required: true },
    "closure-sha256": { type: "string", description: "refuse the closure unless its SHA-256 (hex) is this, e.g. the closure step's closureSha256" },
    "nix-root": { type: "string", description: "bwrap only: a root file system (scripts/nix-rootfs.sh) whose Nix rebuilds instead of the host's" },
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const { closure, isolation, image, out } = values as Record<string, string>;
    const nixRoot = values["nix-root"] as string | undefined;
    if (isolation !== "bwrap" && isolation !== "docker") throw new InputError(`unknown --isolation '${isolation}' (expected bwrap or docker)`);
    if (!fs.existsSync(closure)) throw new InputError(`closure file not found: ${closure}`);
    const target = targetFrom(values);
    isolatedTarget(target, STEP); // a flake that is not local is refused before anything is staged
    checkNixRoot(isolation, nixRoot);
    await checkBackend(isolation, image);
    // A stale marker goes now. --out is created by the step's lock, which removes it again if the
    // run is refused and leaves it empty.
    fs.rmSync(path.join(out, MARKER), { force: true });
    for (const e of fs.readdirSync(out)) if (e.startsWith(STAGED_CLOSURE_PREFIX)) fs.rmSync(path.join(out, e), { recursive: true, force: true });

    // The bytes checked are the bytes imported: one private copy serves both (stageClosure).
    const staged = await stageClosure(closure, path.join(out, `${STAGED_CLOSURE_PREFIX}${crypto.randomBytes(8).toString("hex")}`), values["closure-sha256"]);
    try {
      log(STEP, `checking every source in ${closure} (SHA-256 ${staged.sha256}, staged as ${staged.file}) against ${describeTarget(target)} before building`);
      const check = await checkClosure({ ...target, closure: staged.file });
      if (!check.ok) {
        // Refused before anything is imported or built: the isolation is never even started.
        const reason = `refusing to build ${describeTarget(target)}: ${describeFailure(check)}`;
        throw new CheckFailed(reason, { ok: false, refused: true, built: false, reason, check, closureSha256: staged.sha256 });
      }
      log(STEP, `${check.checked} sources match the hashes the reviewed files declare`);
      return await offlineBuild({ ...target, closure: staged.file, closureOrigin: closure, closureSha256: staged.sha256, isolation, image, nixRoot, out, sourceCheck: { checked: check.checked } });
    } finally {
      fs.rmSync(path.dirname(staged.file), { recursive: true, force: true });
    }
  },
};
