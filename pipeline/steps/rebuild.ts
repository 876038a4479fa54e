// `supply-chain rebuild`: an independent, offline rebuild of the target from the closure alone.
// Order matters: the closure's sources are re-hashed against the reviewed Nix files BEFORE anything
// is built (`nix-store --import` itself checks nothing); then, isolated (bwrap or Docker) with an
// empty /nix and no network, the closure is imported and the target built with substituters off.
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
import { dumpDerivations, Derivation, findRoot, isFixedOutput, urlsOf } from "../lib/derivation";
import { narHashOfFile } from "../lib/nar-diff";
import { checkClosure, describeFailure } from "../lib/closure-check";

const STEP = "rebuild";
export const MARKER = "rebuild.json";

export interface RebuiltPath {
  path: string;
  narHash: string;
  /** The rebuilt NAR, under <out>/nars. */
  nar: string;
}

export interface RebuildResult {
  isolation: Backend;
  image?: string;
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
  closure: string;
  sourceCheck: { checked: number } | null;
  seconds: number;
}

/** Runs in the isolation; POSIX sh so busybox in a minimal image runs it too. */
const INNER_SCRIPT = String.raw`set -eu
W="$1"
export HOME="$W/home" XDG_CACHE_HOME="$W/home/.cache" XDG_STATE_HOME="$W/home/.state" TMPDIR=/tmp
mkdir -p "$HOME" "$W/nars"
say() { echo "== rebuild [$(date +%H:%M:%S)]: $*"; }
# Proof of isolation: the interfaces of this network namespace (/proc/net follows the reader's namespace).
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > "$W/interfaces"
say "network interfaces inside: $(tr '\n' ' ' < "$W/interfaces")"
if [ -n "$(ls -A /nix/store 2>/dev/null)" ]; then
  echo "error: /nix/store is not empty at the start (this image keeps Nix in /nix; use an image whose nix lives outside /nix, see pipeline/rebuilder-image)"
  exit 90
fi
set -- --option substituters "" --option builders "" --option sandbox "$SC_SANDBOX" --option build-users-group "" --option fallback false
say "importing $SC_CLOSURE into the empty store"
nix-store "$@" --import < "$SC_CLOSURE" > "$W/imported"
say "imported $(wc -l < "$W/imported") paths"
drv=$(nix-instantiate "$@" "$SC_FILE" -A "$SC_ATTR" 2>"$W/instantiate.err") || { cat "$W/instantiate.err"; exit 92; }
if [ "$drv" != "$SC_DRV" ]; then
  echo "error: the reviewed files evaluate to $drv inside the isolation but $SC_DRV outside"
  exit 91
fi
say "building $drv (sandbox $SC_SANDBOX, substituters off)"
nix-store "$@" --realise "$drv" > "$W/outpath"
: > "$W/hashes.tmp"
while read -r p; do
  [ -n "$p" ] || continue
  echo "$p $(nix-store -q --hash "$p")" >> "$W/hashes.tmp"
  nix-store --dump "$p" > "$W/nars/$(basename "$p").nar"
done < "$W/expected"
mv "$W/hashes.tmp" "$W/hashes"
ls /nix/store > "$W/store-after"
say "done"
`;

export interface OfflineBuildOptions {
  file: string;
  attribute: string;
  closure: string;
  isolation: Backend;
  image?: string;
  out: string;
  sourceCheck: { checked: number } | null;
}

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
  const file = path.resolve(o.file);
  const closure = path.resolve(o.closure);
  const out = path.resolve(o.out);
  await checkBackend(o.isolation, o.image);

  const { graph } = await dumpDerivations({ file, attribute: o.attribute }, STEP);
  const drvPath = findRoot(graph);
  const built = new Set<string>();
  for (const d of graph.drvs.values()) if (!isFixedOutput(d)) for (const x of Object.values(d.outputs)) if (x.path) built.add(x.path);
  const expected = [...built].sort();

  fs.mkdirSync(out, { recursive: true });
  // Not complete until the end: the marker goes first, leftovers of a killed run with it.
  fs.rmSync(path.join(out, MARKER), { force: true });
  for (const e of fs.readdirSync(out)) if (e.startsWith(".staging-")) fs.rmSync(path.join(out, e), { recursive: true, force: true });
  const runId = crypto.randomBytes(8).toString("hex");
  const work = path.join(out, `.staging-${runId}`);
  fs.mkdirSync(work);
  fs.writeFileSync(path.join(work, "expected"), expected.join("\n") + "\n");
  fs.writeFileSync(path.join(work, "inner.sh"), INNER_SCRIPT);
  const stagedLog = path.join(work, "build.log");
  const finalLog = path.join(out, "build.log");

  const nixDir = fs.statSync(file).isDirectory() ? file : path.dirname(file);
  const entry = fs.statSync(file).isDirectory() ? path.join(file, "default.nix") : file;
  log(STEP, `offline rebuild of ${drvPath} with ${o.isolation}${o.image ? ` (${o.image})` : ""}: ${expected.length} outputs to build`);
  const res = await runIsolated({
    backend: o.isolation,
    image: o.image,
    readOnly: [...new Set([nixDir, closure])],
    workDir: work,
    script: path.join(work, "inner.sh"),
    args: [work],
    env: {
      PATH: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
      SC_CLOSURE: closure,
      SC_FILE: entry,
      SC_ATTR: o.attribute,
      SC_DRV: drvPath,
      // Docker's default seccomp profile forbids the user namespace Nix's sandbox needs: there the
      // container (no network, no host files) is the sandbox.
      SC_SANDBOX: o.isolation === "bwrap" ? "true" : "false",
    },
    logFile: stagedLog,
    owner: out,
    label: STEP,
  });
  const interfaces = readLines(path.join(work, "interfaces"));
  const logText = fs.existsSync(stagedLog) ? fs.readFileSync(stagedLog, "utf8") : "";
  fs.renameSync(stagedLog, finalLog);
  const base = { isolation: o.isolation, image: o.image, network: { interfaces }, drvPath, log: finalLog, out };
  if (interfaces.length && interfaces.some((i) => i !== "lo")) {
    fail(`isolation is broken: network interfaces ${interfaces.join(", ")} were visible inside`, base);
  }
  if (res.code !== 0) {
    const why = explainFailure(logText, graph.drvs) ?? `isolated build exited with ${res.code ?? res.signal}`;
    fs.rmSync(work, { recursive: true, force: true });
    fail(`offline rebuild of ${drvPath} failed: ${why} (log ${finalLog})`, base);
  }
  if (!interfaces.length) fail(`no record of the network interfaces inside the isolation (log ${finalLog})`, base);

  const imported = new Set(readLines(path.join(work, "imported")));
  // A build output that came in with the closure was never rebuilt: Nix would just keep it.
  const smuggled = expected.filter((p) => imported.has(p));
  if (smuggled.length) fail(`the closure carries build output ${smuggled[0]}${smuggled.length > 1 ? ` (and ${smuggled.length - 1} more)` : ""}: it was not rebuilt from sources`, base);
  // A source that is in the store but did not come from the closure was obtained some other way.
  const fodOuts = new Map<string, Derivation>();
  for (const d of graph.drvs.values()) if (isFixedOutput(d)) for (const x of Object.values(d.outputs)) if (x.path) fodOuts.set(x.path, d);
  for (const name of readLines(path.join(work, "store-after"))) {
    const p = `/nix/store/${name}`;
    if (fodOuts.has(p) && !imported.has(p)) fail(`source ${p} was not in the closure but appeared in the store during the offline build`, base);
  }

  const hashes = new Map(readLines(path.join(work, "hashes")).map((l) => l.split(" ") as [string, string]));
  const outPath = readLines(path.join(work, "outpath"))[0];
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

  fs.rmSync(narsDir, { recursive: true, force: true });
  fs.renameSync(path.join(work, "nars"), narsDir);
  fs.rmSync(work, { recursive: true, force: true });
  const result: RebuildResult = {
    isolation: o.isolation,
    ...(o.image ? { image: o.image } : {}),
    network: { interfaces },
    drvPath,
    outPath,
    narHash: top!.narHash,
    paths,
    log: finalLog,
    out,
    nars: narsDir,
    runId,
    closure,
    sourceCheck: o.sourceCheck,
    seconds: Math.round((Date.now() - started) / 100) / 10,
  };
  writeJsonAtomic(path.join(out, MARKER), result);
  log(STEP, `rebuilt ${paths.length} paths offline; interfaces inside: ${interfaces.join(", ")}`);
  return result;
}

export const step: StepDefinition<RebuildResult> = {
  name: "rebuild",
  summary: "Rebuild the target offline from the closure alone, isolated (bwrap or Docker), after re-checking every source",
  options: {
    file: { type: "string", description: "the reviewed Nix file", required: true },
    attribute: { type: "string", description: "attribute of the file to rebuild", required: true },
    closure: { type: "string", description: "source closure (from `supply-chain closure`)", required: true },
    isolation: { type: "string", description: "bwrap or docker", required: true },
    image: { type: "string", description: "docker image with nix outside /nix (pin by digest); see pipeline/rebuilder-image" },
    out: { type: "string", description: "output directory: rebuild.json (written last), build.log, nars/", required: true },
  },
  async run({ values }) {
    const { file, attribute, closure, isolation, image, out } = values as Record<string, string>;
    if (isolation !== "bwrap" && isolation !== "docker") throw new InputError(`unknown --isolation '${isolation}' (expected bwrap or docker)`);
    if (!fs.existsSync(closure)) throw new InputError(`closure file not found: ${closure}`);
    if (!fs.existsSync(file)) throw new InputError(`Nix file not found: ${file}`);
    await checkBackend(isolation, image);
    fs.mkdirSync(out, { recursive: true });
    fs.rmSync(path.join(out, MARKER), { force: true });

    log(STEP, `checking every source in ${closure} against ${file} before building`);
    const check = await checkClosure({ file, attribute, closure });
    if (!check.ok) {
      // Refused before anything is imported or built: the isolation is never even started.
      const reason = `refusing to build ${attribute} of ${file}: ${describeFailure(check)}`;
      throw new CheckFailed(reason, { ok: false, refused: true, built: false, reason, check });
    }
    log(STEP, `${check.checked} sources match the hashes the reviewed files declare`);
    return offlineBuild({ file, attribute, closure, isolation, image, out, sourceCheck: { checked: check.checked } });
  },
};
