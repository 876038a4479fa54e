// `supply-chain attest`: the proof leaves the machine. From what build, closure, verify (and boot-test)
// printed, and from the local store, it writes a signed SLSA provenance, a signed verification summary
// and a CycloneDX SBOM of the sources (docs/attest.md). Facts are re-read from the store, not copied
// from the JSON: every subject's NAR hash comes from `nix path-info`, every file's sha256 from its bytes.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { INTOTO_PAYLOAD_TYPE, signEnvelope } from "../lib/dsse";
import { graphOfDrv, nixVersion } from "../lib/nix";
import { sha256File, writeFileAtomic } from "../lib/files";
import {
  ArtifactFile,
  BootVerdict,
  BuiltPath,
  provenancePredicate,
  RebuildVerdict,
  resolvedDependencies,
  SLSA_PROVENANCE_V1,
  SLSA_VSA_V1,
  statement,
  subjectsOf,
  Subject,
  verificationPredicate,
} from "../lib/in-toto";
import { run } from "../lib/proc";
import { DEFAULT_BUILDER_ID, readSigningKey, sourceParameters, toolVersion } from "../lib/attestation";
import { buildSbom, targetNameOf, uuidV5, validateSbom } from "../lib/sbom";
import { InputError, log, StepDefinition } from "../lib/step";
import { parseHash } from "../lib/storepath";
import type { BootTestResult } from "./boot-test";
import type { BuildResult } from "./build";
import type { Manifest } from "./closure";
import { expectedOutputs, RebuildResult } from "../lib/offline-build";
import type { VerifyResult } from "./verify";

const STEP = "attest";
export interface AttestResult {
  provenance: string;
  verification: string;
  sbom: string;
  sbomSha256: string;
  keyid: string;
  subjects: Subject[];
}

function readJson<T>(file: string, what: string, required: string[]): T {
  let v: any;
  try {
    v = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e: any) {
    throw new InputError(`cannot read ${what} ${file}: ${e.message}`);
  }
  const missing = required.filter((k) => v?.[k] === undefined);
  if (missing.length) throw new InputError(`${file} is not ${what} (no ${missing.join("/")})`);
  return v as T;
}

interface PathFacts {
  narSha256: string;
  registrationTime?: number;
}

/** NAR hash and registration time of valid store paths, by `nix path-info --json` in a few processes. */
export async function pathFacts(paths: string[]): Promise<Map<string, PathFacts>> {
  const facts = new Map<string, PathFacts>();
  for (let i = 0; i < paths.length; i += 1000) {
    const chunk = paths.slice(i, i + 1000);
    const r = await run("nix", ["--extra-experimental-features", "nix-command", "path-info", "--json", ...chunk], { allowFailure: true, streamStderr: false });
    if (r.code !== 0) {
      const invalid = /path '([^']+)' is not valid/.exec(r.stderr);
      if (invalid) throw new InputError(`${invalid[1]} is not in the local store: attest runs where the build ran (or realise it first)`);
      throw new InputError(`nix path-info failed (exit ${r.code}): ${r.stderr.trim().split("\n").pop()}`);
    }
    const parsed = JSON.parse(r.stdout);
    // Nix < 2.19 prints a list of {path, ...}; later an object keyed by path.
    const entries: [string, any][] = Array.isArray(parsed) ? parsed.map((x: any) => [x.path, x]) : Object.entries(parsed);
    for (const [p, info] of entries) {
      if (!info) throw new InputError(`${p} is not in the local store: attest runs where the build ran (or realise it first)`);
      facts.set(p, { narSha256: parseHash(info.narHash, "sha256").hex, registrationTime: info.registrationTime });
    }
  }
  for (const p of paths) if (!facts.has(p)) throw new InputError(`nix path-info reported nothing for ${p}`);
  return facts;
}

/** The shipped files: the ISO itself, or the regular files of a kernel+initrd image directory. */
export async function artifactFiles(build: BuildResult): Promise<ArtifactFile[]> {
  if (!build.artifact) return [];
  const st = fs.statSync(build.artifact, { throwIfNoEntry: false });
  if (!st) throw new InputError(`the build's artifact ${build.artifact} does not exist on this machine`);
  if (st.isFile()) {
    const sha256 = await sha256File(build.artifact);
    if (build.artifactSha256 && sha256 !== build.artifactSha256) {
      throw new InputError(`artifact ${build.artifact} has sha256 ${sha256}, the build recorded ${build.artifactSha256}`);
    }
    const rel = path.relative(build.outPath, build.artifact);
    return [{ name: rel && !rel.startsWith("..") ? rel : path.basename(build.artifact), sha256 }];
  }
  const files = fs.readdirSync(build.artifact, { withFileTypes: true }).filter((d) => d.isFile()).map((d) => d.name).sort();
  return Promise.all(files.map(async (f) => ({ name: f, sha256: await sha256File(path.join(build.artifact!, f)) })));
}

/** `…@sha256:<hex>` or a bare image id `sha256:<hex>`: the digest; a tag alone says nothing about content. */
export function imageDigest(image: string | undefined): string | null {
  const m = /(?:^|@)(sha256:[0-9a-f]{64})$/.exec(image ?? "");
  return m ? m[1] : null;
}

const iso = (unixSeconds: number) => new Date(unixSeconds * 1000).toISOString().replace(/\.000Z$/, "Z");

export interface AttestOptions {
  build: string;
  closure: string;
  verify: string;
  bootTest?: string;
  rebuild?: string;
  out: string;
  key: crypto.KeyObject;
  builderId: string;
  sandbox: boolean;
  timestamp?: string;
}

export async function attest(o: AttestOptions): Promise<AttestResult> {
  const build = readJson<BuildResult>(o.build, "the build step's JSON", ["drvPath", "outPath", "narHash"]);
  const manifestFile = path.join(o.closure, "manifest.json");
  const manifest = readJson<Manifest>(manifestFile, "a closure manifest", ["target", "sources", "evalPaths"]);
  const verified = readJson<VerifyResult>(o.verify, "the verify step's JSON", ["reproducible", "checked", "matched"]);
  const boot = o.bootTest ? readJson<BootTestResult>(o.bootTest, "the boot-test step's JSON", ["passed", "probes"]) : null;
  if (manifest.target.drvPath !== build.drvPath) {
    throw new InputError(`the closure in ${o.closure} is of ${manifest.target.drvPath}, but the build (${o.build}) is of ${build.drvPath}`);
  }
  if (verified.drvPath && verified.drvPath !== build.drvPath) {
    throw new InputError(`the verification ${o.verify} is of ${verified.drvPath}, but the build (${o.build}) is of ${build.drvPath}`);
  }
  // The rebuild's own JSON carries what verify does not: interfaces seen inside, the image.
  const rebuildFile = o.rebuild ?? (verified.report ? path.join(path.dirname(verified.report), "rebuild.json") : undefined);
  let rebuilt: RebuildResult | null = null;
  if (rebuildFile && (o.rebuild || fs.existsSync(rebuildFile))) {
    rebuilt = readJson<RebuildResult>(rebuildFile, "the rebuild step's JSON", ["isolation", "network", "drvPath"]);
    if (rebuilt.drvPath !== build.drvPath) throw new InputError(`the rebuild ${rebuildFile} is of ${rebuilt.drvPath}, but the build (${o.build}) is of ${build.drvPath}`);
  } else log(STEP, `no rebuild JSON next to ${verified.report ?? o.verify}: interfaces and image are recorded as null`);

  log(STEP, `reading the graph of ${build.drvPath} and the NAR hashes of its outputs from the store`);
  const graph = await graphOfDrv(build.drvPath);
  const outputs = expectedOutputs(graph);
  if (!outputs.includes(build.outPath)) throw new InputError(`${build.outPath} is not an output of ${build.drvPath}`);
  const evalPaths = manifest.evalPaths.map((e) => e.path);
  const [facts, version, artifacts, source] = await Promise.all([pathFacts([...outputs, ...evalPaths]), nixVersion(), artifactFiles(build), sourceParameters(manifest.target)]);
  const nixVer = version.join(".");
  const top = facts.get(build.outPath)!;
  if (parseHash(build.narHash, "sha256").hex !== top.narSha256) {
    throw new InputError(`${build.outPath} has NAR hash sha256:${top.narSha256} in the store, the build recorded ${build.narHash}`);
  }
  const built: BuiltPath[] = outputs.map((p) => ({ path: p, narSha256: facts.get(p)!.narSha256 }));
  const evalNar = new Map(evalPaths.map((p) => [p, facts.get(p)!.narSha256]));
  const subjects = subjectsOf(artifacts, built);

  // Each built path is registered when its build finished: the first and last bound the build.
  const times = outputs.map((p) => facts.get(p)!.registrationTime).filter((t): t is number => typeof t === "number");
  const startedOn = (build as any).startedOn ?? (times.length ? iso(Math.min(...times)) : null);
  const finishedOn = (build as any).finishedOn ?? (times.length ? iso(Math.max(...times)) : null);
  const invocationId = (build as any).invocationId ?? uuidV5(`${build.drvPath}\n${build.outPath}\n${top.registrationTime ?? ""}`);

  fs.mkdirSync(o.out, { recursive: true });
  const sbomFile = path.join(o.out, "sbom.cdx.json");
  const sbom = buildSbom({ manifest, evalPathNarSha256: evalNar, target: { ...targetNameOf(build.outPath), outPath: build.outPath }, tool: { name: "secure-supply-chain", version: toolVersion() }, timestamp: o.timestamp });
  const invalid = await validateSbom(sbom);
  if (invalid) throw new Error(`the SBOM does not validate against CycloneDX 1.6 (not written): ${invalid}`);
  const sbomSha256 = crypto.createHash("sha256").update(sbom).digest("hex");

  const closureFile = path.join(o.closure, "source-export.closure");
  const byproducts = [{ name: "manifest.json", digest: { sha256: await sha256File(manifestFile) } }, { name: "sbom.cdx.json", digest: { sha256: sbomSha256 } }];
  if (fs.existsSync(closureFile)) byproducts.push({ name: "source-export.closure", digest: { sha256: await sha256File(closureFile) } });
  const provenance = statement(
    subjects,
    SLSA_PROVENANCE_V1,
    provenancePredicate({
      source,
      drvPath: build.drvPath,
      nixVersion: nixVer,
      sandbox: o.sandbox,
      isolation: rebuilt?.isolation ?? verified.isolation ?? null,
      rebuilderImage: rebuilt?.image ?? null,
      remoteBuilders: rebuilt?.builders,
      dependencies: resolvedDependencies(manifest, evalNar),
      builderId: o.builderId,
      toolVersion: toolVersion(),
      invocationId,
      startedOn,
      finishedOn,
      byproducts,
    }),
  );
  const provenanceLine = JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(provenance)), INTOTO_PAYLOAD_TYPE, o.key)) + "\n";

  const rebuildVerdict: RebuildVerdict = {
    reproducible: verified.reproducible,
    matched: verified.matched,
    checked: verified.checked,
    mismatched: (verified.mismatched ?? []).map((m) => m.path),
    isolation: rebuilt?.isolation ?? verified.isolation,
    interfaces: rebuilt?.network?.interfaces ?? null,
    image: rebuilt?.image ?? null,
    imageDigest: imageDigest(rebuilt?.image),
  };
  const bootVerdict: BootVerdict | null = boot && {
    passed: boot.passed,
    probesPassed: boot.probes.filter((p) => p.ok).length,
    probes: boot.probes.map((p) => ({ name: p.name, ok: p.ok })),
    accel: boot.accel,
  };
  const verification = statement(
    subjects,
    SLSA_VSA_V1,
    verificationPredicate({
      verifierId: o.builderId,
      toolVersion: toolVersion(),
      nixVersion: nixVer,
      timeVerified: o.timestamp ?? new Date().toISOString(),
      resourceUri: `file://${build.artifact ?? build.outPath}`,
      provenance: { uri: "provenance.intoto.jsonl", digest: { sha256: crypto.createHash("sha256").update(provenanceLine).digest("hex") } },
      rebuild: rebuildVerdict,
      boot: bootVerdict,
    }),
  );
  const verificationLine = JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(verification)), INTOTO_PAYLOAD_TYPE, o.key)) + "\n";

  const provenanceFile = path.join(o.out, "provenance.intoto.jsonl");
  const verificationFile = path.join(o.out, "verification.intoto.jsonl");
  writeFileAtomic(sbomFile, sbom);
  writeFileAtomic(provenanceFile, provenanceLine);
  writeFileAtomic(verificationFile, verificationLine);
  const keyid = JSON.parse(provenanceLine).signatures[0].keyid;
  log(STEP, `${subjects.length} subjects (${artifacts.length} files, ${built.length} store paths), ${manifest.sources.length + manifest.evalPaths.length} sources; signed with keyid ${keyid}`);
  return { provenance: provenanceFile, verification: verificationFile, sbom: sbomFile, sbomSha256, keyid, subjects };
}

export const step: StepDefinition<AttestResult> = {
  name: STEP,
  summary: "sign SLSA provenance and a verification summary (in-toto/DSSE), and write a CycloneDX SBOM of the sources",
  options: {
    build: { type: "string", description: "the build step's JSON", required: true },
    closure: { type: "string", description: "the closure step's output directory (with manifest.json)", required: true },
    verify: { type: "string", description: "the verify step's JSON", required: true },
    rebuild: { type: "string", description: "the rebuild step's JSON (default: rebuild.json next to verify's report, when there)" },
    "boot-test": { type: "string", description: "the boot-test step's JSON, recorded in the verification summary" },
    key: { type: "string", description: "Ed25519 private key, PKCS#8 PEM file (from keygen)" },
    "key-env": { type: "string", description: "name of an environment variable holding the private key's PEM instead of --key" },
    out: { type: "string", description: "directory for provenance.intoto.jsonl, verification.intoto.jsonl, sbom.cdx.json", required: true },
    "builder-id": { type: "string", description: "runDetails.builder.id and verifier.id (a URI naming this builder)", default: DEFAULT_BUILDER_ID },
    "no-sandbox": { type: "boolean", description: "the build ran with --no-sandbox (recorded as internalParameters.sandbox false)" },
    timestamp: { type: "string", description: "ISO 8601 time for the SBOM's metadata.timestamp and the summary's timeVerified, or 'now' (default: none in the SBOM)" },
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const key = readSigningKey(values);
    let timestamp: string | undefined = values.timestamp;
    if (timestamp === "now") timestamp = new Date().toISOString();
    else if (timestamp !== undefined && Number.isNaN(Date.parse(timestamp))) throw new InputError(`--timestamp must be ISO 8601 or 'now', got '${timestamp}'`);
    const closure = path.resolve(values.closure);
    if (!fs.existsSync(path.join(closure, "manifest.json"))) throw new InputError(`--closure ${closure} has no manifest.json (give the closure step's --out directory)`);
    return attest({
      build: values.build,
      closure,
      verify: values.verify,
      bootTest: values["boot-test"],
      rebuild: values.rebuild,
      out: path.resolve(values.out),
      key,
      builderId: values["builder-id"],
      sandbox: !values["no-sandbox"],
      timestamp,
    });
  },
};
