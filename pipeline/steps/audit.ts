// `supply-chain audit`: the independent party's check (docs/audit.md). On a machine whose Nix store holds
// nothing of the target, holding only the reviewed checkout, the closure, the publisher's signed
// provenance and public key: is what the publisher signed what these sources build?
//
// Order matters; each check runs before what it protects:
//   (a) the provenance's signature, with the publisher's key (nothing unsigned is believed);
//   (b) the closure is the one the provenance names, every path of it self-certifies (its name commits
//       to its bytes) and every pin of the checkout is held with the pinned hash — before any import;
//   (c) isolated (no network, an empty store of its own, none of the host's store or file:// sources):
//       import, evaluate offline, and the result must be the derivation the publisher attests;
//   (d) the closure against that evaluation (check-closure: declared hashes, nothing missing or extra);
//   (e) build, substituters off, in the same store;
//   (f) every rebuilt path's NAR hash against the digest the PROVENANCE attests (no local original);
//   (g) with --key, the auditor's own signed provenance of the rebuild and a verification summary.
// The Nix parts run isolated; the checks are this program's own code reading the staged bytes.
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { checkExportAgainst, describeFailure, describeMissingPins, expectedSources, expectTraced, preImportCheck, stageClosure } from "../lib/closure-check";
import { collectSources, parseDerivationDump } from "../lib/derivation";
import { archivePaths, checkoutPins, flakeEvalInputs, tracedStorePaths } from "../lib/eval-inputs";
import { INTOTO_PAYLOAD_TYPE, signEnvelope } from "../lib/dsse";
import { writeFileAtomic, writeJsonAtomic } from "../lib/files";
import { NAR_SHA256, provenancePredicate, SLSA_PROVENANCE_V1, SLSA_VSA_V1, statement, subjectsOf, verificationPredicate } from "../lib/in-toto";
import { Backend, checkBackend } from "../lib/isolation";
import { listNarFile } from "../lib/nar-diff";
import { describeTarget, narHashHex, NixTarget, TARGET_OPTIONS, targetFrom } from "../lib/nix";
import { CheckFailed, InputError, log, StepDefinition } from "../lib/step";
import { DEFAULT_BUILDER_ID, readSigningKey, sourceParameters, toolVersion, verifiedStatement } from "../lib/attestation";
import { BUILDER_OPTIONS, builderRecords, buildersFrom, RemoteBuilder } from "../lib/builders";
import { checkBuilderSystem, checkNixRoot, collectStaged, isolatedTarget, machineFault, readLines, RebuildPhase, RebuildResult, runRebuildScript } from "../lib/offline-build";

const STEP = "audit";
const STORE_DIR = "/nix/store";

export interface Mismatch {
  path: string;
  /** nixNarSha256 (hex) the publisher's provenance attests, and what this rebuild produced. */
  attested: string;
  rebuilt: string;
  /** The rebuilt output's regular files and their sha256 (the provenance holds only the publisher's NAR
   * digest: which file differs is told by comparing these with the publisher's files). */
  files: { path: string; sha256: string }[];
}

export interface AuditResult {
  reproduced: boolean;
  /** Attested store paths compared with a rebuilt one, and how many were identical. */
  checked: number;
  matched: number;
  mismatched: Mismatch[];
  /** Store paths the provenance attests that this rebuild did not produce (not in the reviewed graph). */
  notRebuilt: string[];
  /** The auditor's signed provenance of this rebuild (with --key), else null. */
  attestation: string | null;
  verification: string | null;
  drvPath: string;
  outPath: string;
  publisher: { keyid: string; provenance: string; builderId: string | null };
  auditor: { keyid: string; builderId: string } | null;
  closure: { file: string; sha256: string; paths: number; pinned: string[] };
  isolation: Backend;
  image?: string;
  nixRoot?: string;
  interfaces: string[];
  nixVersion: string | null;
  seconds: number;
}

function refuse(reason: string, extra: Record<string, unknown> = {}): never {
  throw new CheckFailed(reason, { reproduced: false, refused: true, reason, ...extra });
}

async function rebuiltFiles(nar: string): Promise<Mismatch["files"]> {
  const listing = await listNarFile(nar);
  return [...listing].filter(([, f]) => f.type === "regular").map(([p, f]) => ({ path: p || ".", sha256: f.sha256! }));
}

/** The target: a file and attribute, or a local flake reference with its attribute (path:/checkout#image). */
export type AuditOptions = NixTarget & {
  closure: string;
  attestation: string;
  publicKey: string;
  isolation: Backend;
  image?: string;
  out: string;
  pins: string[];
  closureSha256?: string;
  /** bwrap only: run the root filesystem's Nix (scripts/nix-rootfs.sh) instead of the host's. */
  nixRoot?: string;
  key?: crypto.KeyObject;
  builderId: string;
  /** Nix remote builders for the build phase (lib/builders.ts), and the local max-jobs beside them. */
  builders?: RemoteBuilder[];
  maxJobs?: number;
};

export async function audit(o: AuditOptions): Promise<AuditResult> {
  const started = Date.now();
  const iso = isolatedTarget(o, STEP);
  const out = path.resolve(o.out);
  await checkBackend(o.isolation, o.image);
  checkNixRoot(o.isolation, o.nixRoot);
  if (o.builders?.length) checkBuilderSystem(o.isolation, o.nixRoot);

  // (a) Nothing of the publisher's is believed before its signature verifies.
  const signed = verifiedStatement(o.attestation, o.publicKey);
  if (!signed.ok) refuse(`the publisher's attestation ${o.attestation} does not verify with ${o.publicKey}: ${signed.reason}`);
  const st = signed.v.statement;
  if (st.predicateType !== SLSA_PROVENANCE_V1) throw new InputError(`${o.attestation} is a ${st.predicateType} statement, not SLSA provenance (${SLSA_PROVENANCE_V1}): give the publisher's provenance.intoto.jsonl`);
  const drvPath: unknown = st.predicate?.buildDefinition?.internalParameters?.drvPath;
  if (typeof drvPath !== "string") throw new InputError(`${o.attestation} names no derivation (buildDefinition.internalParameters.drvPath)`);
  const attested = new Map(st.subject.filter((s) => s.name.startsWith(`${STORE_DIR}/`) && s.digest[NAR_SHA256]).map((s) => [s.name, s.digest[NAR_SHA256].toLowerCase()]));
  const byproduct = (st.predicate?.runDetails?.byproducts ?? []).find((b: any) => b?.name === "source-export.closure")?.digest?.sha256;
  const publisher = { keyid: signed.v.keyid, provenance: path.resolve(o.attestation), builderId: st.predicate?.runDetails?.builder?.id ?? null };
  log(STEP, `the provenance verifies with keyid ${publisher.keyid}: ${drvPath}, ${attested.size} store paths attested`);

  fs.mkdirSync(out, { recursive: true });
  for (const e of fs.readdirSync(out)) if (e.startsWith(".audit-")) fs.rmSync(path.join(out, e), { recursive: true, force: true });
  const runId = crypto.randomBytes(8).toString("hex");
  const run = path.join(out, `.audit-${runId}`);
  try {
    // (b) One private copy is what is checked and what is imported; it must be the closure the publisher signed.
    const expectedSha = o.closureSha256 ?? byproduct;
    const staged = await stageClosure(o.closure, path.join(run, "closure"), expectedSha, expectedSha === byproduct ? "the digest the provenance records" : "--closure-sha256");
    const pins = checkoutPins(o, o.pins);
    log(STEP, `checking ${o.closure} (SHA-256 ${staged.sha256}) before importing it: every path self-certifies, ${pins.length} pin(s) held`);
    const pre = await preImportCheck(staged.file, pins, STORE_DIR);
    if (!pre.ok) {
      const why = pre.error ?? (pre.missingPins.length ? describeMissingPins(pre.missingPins) : `${pre.notSelfCertifying.length} path(s) whose name does not commit to their bytes (a build output, or tampered): ${pre.notSelfCertifying.slice(0, 3).join("; ")}`);
      refuse(`refusing to import ${o.closure}: ${why}`, { missingPins: pre.missingPins, notSelfCertifying: pre.notSelfCertifying });
    }

    // (c) Import and evaluate, isolated, into a store of the audit's own that starts empty.
    const store = path.join(run, "nix");
    const work = path.join(run, "work");
    fs.mkdirSync(store);
    fs.mkdirSync(work);
    const buildLog = path.join(out, "audit.log");
    fs.rmSync(buildLog, { force: true });
    const isolated = (phases: RebuildPhase[]) =>
      runRebuildScript({
        env: { closure: staged.file, ...iso.env, drvPath, isolation: o.isolation, phases, dumpGraph: true, maxJobs: phases.includes("build") ? o.maxJobs : undefined },
        image: o.image,
        readOnly: [iso.dir, path.dirname(staged.file)],
        work,
        nixDir: store,
        systemRoot: o.nixRoot,
        // Only the build phase sends work out; the import and evaluation stay on the audit's own store.
        builders: phases.includes("build") ? o.builders : undefined,
        logFile: buildLog,
        owner: out,
        label: STEP,
      });
    const interfaces = () => readLines(path.join(work, "interfaces"));
    const first = await isolated(["import", "eval"]);
    if (interfaces().some((i) => i !== "lo")) refuse(`isolation is broken: network interfaces ${interfaces().join(", ")} were visible inside`);
    const logText = () => (fs.existsSync(buildLog) ? fs.readFileSync(buildLog, "utf8") : "");
    // A full disk is the auditor's machine refusing (exit 2), not a verdict on what the publisher signed.
    const firstFault = first.code !== 0 ? machineFault(first, logText(), out, buildLog) : undefined;
    if (firstFault) throw firstFault;
    if (first.code === 91) {
      const m = /evaluate to (\S+) inside/.exec(logText());
      refuse(`the reviewed files evaluate to ${m?.[1] ?? "another derivation"}, but the publisher's provenance attests ${drvPath}: this checkout is not what was built`);
    }
    if (first.code === 92) {
      const err = logText().split("\n").find((l) => /error:/.test(l))?.replace(/^.*?error:\s*/, "") ?? "see the log";
      refuse(`cannot evaluate ${describeTarget(o)} offline from the closure alone: ${err} (log ${buildLog})`);
    }
    if (first.code !== 0) refuse(`the isolated import and evaluation exited with ${first.code ?? first.signal} (log ${buildLog})`);

    // (d) The closure against what these files, evaluated here, require.
    const graph = parseDerivationDump(fs.readFileSync(path.join(work, "graph.json"), "utf8"), STORE_DIR);
    const want = expectedSources(graph, collectSources(graph, drvPath));
    let traced = tracedStorePaths(fs.readFileSync(path.join(work, "eval.log"), "utf8"), STORE_DIR);
    if (o.flake) traced = flakeEvalInputs(archivePaths(JSON.parse(fs.readFileSync(path.join(work, "archive.json"), "utf8"))), traced);
    expectTraced(want, traced);
    const check = await checkExportAgainst(staged.file, want, STORE_DIR, pins);
    if (!check.ok) refuse(`closure rejected before building: ${describeFailure(check)}`, { check });
    log(STEP, `${check.checked} sources match what the reviewed files declare; building`);

    // (e) Build in the same store, then the rebuild step's own post-run checks (collectStaged).
    const second = await isolated(["build"]);
    const fault = second.code !== 0 ? machineFault(second, logText(), out, buildLog) : undefined;
    if (fault) throw fault;
    if (second.code !== 0) refuse(`the offline build of ${drvPath} failed (exit ${second.code ?? second.signal}; log ${buildLog})`);
    const rebuilt: RebuildResult = await collectStaged({
      work,
      out: path.join(out, "rebuild"),
      drvPath,
      graph,
      isolation: o.isolation,
      image: o.image,
      nixRoot: o.nixRoot,
      builders: builderRecords(o.builders),
      closure: path.resolve(o.closure),
      closureSha256: staged.sha256,
      sourceCheck: { checked: check.checked },
      runId,
      started,
      log: buildLog,
    });
    const nixVersion = rebuilt.nixVersion;

    // (f) Each rebuilt path against the publisher's signed digest.
    const mismatched: Mismatch[] = [];
    let checked = 0;
    for (const p of rebuilt.paths) {
      const a = attested.get(p.path);
      if (!a) continue;
      checked++;
      const hex = narHashHex(p.narHash);
      if (hex !== a) mismatched.push({ path: p.path, attested: a, rebuilt: hex, files: await rebuiltFiles(p.nar) });
    }
    const rebuiltSet = new Set(rebuilt.paths.map((p) => p.path));
    const notRebuilt = [...attested.keys()].filter((p) => !rebuiltSet.has(p)).sort();
    const topAttested = attested.has(rebuilt.outPath);
    const reproduced = topAttested && mismatched.length === 0 && notRebuilt.length === 0;

    // (g) The auditor's own claims, in the publisher's formats.
    let attestation: string | null = null;
    let verification: string | null = null;
    let auditor: AuditResult["auditor"] = null;
    if (o.key) {
      const finishedOn = new Date().toISOString();
      const built = rebuilt.paths.map((p) => ({ path: p.path, narSha256: narHashHex(p.narHash) }));
      const provenance = statement(
        subjectsOf([], built),
        SLSA_PROVENANCE_V1,
        provenancePredicate({
          source: await sourceParameters(o.flake !== undefined ? { flake: o.flake } : { file: path.resolve(o.file), attribute: o.attribute }),
          drvPath,
          nixVersion: nixVersion ?? "unknown",
          sandbox: o.isolation === "bwrap",
          isolation: o.isolation,
          rebuilderImage: o.image ?? null,
          remoteBuilders: rebuilt.builders,
          dependencies: [...pre.paths].sort().map(([name, nar]) => ({ name, digest: { [NAR_SHA256]: nar } })),
          builderId: o.builderId,
          toolVersion: toolVersion(),
          invocationId: runId,
          startedOn: new Date(started).toISOString(),
          finishedOn,
          byproducts: [{ name: "source-export.closure", digest: { sha256: staged.sha256 } }],
        }),
      );
      const line = JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(provenance)), INTOTO_PAYLOAD_TYPE, o.key)) + "\n";
      const vsa = statement(
        st.subject,
        SLSA_VSA_V1,
        verificationPredicate({
          verifierId: o.builderId,
          toolVersion: toolVersion(),
          nixVersion: nixVersion ?? "unknown",
          timeVerified: finishedOn,
          resourceUri: `file://${rebuilt.outPath}`,
          provenance: { uri: publisher.provenance, digest: { sha256: signed.v.fileSha256 } },
          rebuild: {
            reproducible: reproduced,
            matched: checked - mismatched.length,
            checked,
            mismatched: mismatched.map((m) => m.path),
            isolation: o.isolation,
            interfaces: rebuilt.network.interfaces,
            image: o.image ?? null,
            imageDigest: null,
          },
          boot: null,
        }),
      );
      attestation = path.join(out, "audit.provenance.intoto.jsonl");
      verification = path.join(out, "audit.verification.intoto.jsonl");
      writeFileAtomic(attestation, line);
      writeFileAtomic(verification, JSON.stringify(signEnvelope(Buffer.from(JSON.stringify(vsa)), INTOTO_PAYLOAD_TYPE, o.key)) + "\n");
      auditor = { keyid: JSON.parse(line).signatures[0].keyid, builderId: o.builderId };
    }

    const result: AuditResult = {
      reproduced,
      checked,
      matched: checked - mismatched.length,
      mismatched,
      notRebuilt,
      attestation,
      verification,
      drvPath,
      outPath: rebuilt.outPath,
      publisher,
      auditor,
      closure: { file: path.resolve(o.closure), sha256: staged.sha256, paths: pre.paths.size, pinned: pins.map((p) => `${p.file}#${p.name}`) },
      isolation: o.isolation,
      ...(o.image ? { image: o.image } : {}),
      ...(o.nixRoot ? { nixRoot: o.nixRoot } : {}),
      interfaces: rebuilt.network.interfaces,
      nixVersion,
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
    writeJsonAtomic(path.join(out, "audit.json"), result);
    if (!reproduced) {
      const m = mismatched[0];
      const reason = m
        ? `not reproduced: ${m.path} rebuilt with NAR sha256 ${m.rebuilt}, the publisher attests ${m.attested}${mismatched.length > 1 ? ` (and ${mismatched.length - 1} more)` : ""}`
        : notRebuilt.length
          ? `not reproduced: the provenance attests ${notRebuilt[0]}, which the reviewed files do not build${notRebuilt.length > 1 ? ` (and ${notRebuilt.length - 1} more)` : ""}`
          : `not reproduced: the provenance attests no digest for the built output ${rebuilt.outPath}`;
      throw new CheckFailed(reason, { ...result, reason });
    }
    log(STEP, `reproduced: ${checked} attested paths rebuilt bit for bit from the closure alone`);
    return result;
  } finally {
    fs.rmSync(run, { recursive: true, force: true });
  }
}

export const step: StepDefinition<AuditResult> = {
  name: STEP,
  summary: "independent audit: check the publisher's signed provenance, rebuild from the closure in an empty isolated store, compare with the attested digests",
  options: {
    ...TARGET_OPTIONS,
    closure: { type: "string", description: "the publisher's source closure (source-export.closure)", required: true },
    attestation: { type: "string", description: "the publisher's signed provenance (provenance.intoto.jsonl)", required: true },
    "public-key": { type: "string", description: "the publisher's Ed25519 public key (SPKI PEM), obtained independently of the attestation", required: true },
    isolation: { type: "string", description: "bwrap or docker", required: true },
    image: { type: "string", description: "docker image whose Nix is outside /nix/store (pipeline/rebuilder-image), pinned by digest" },
    out: { type: "string", description: "directory for audit.json, audit.log, rebuild/ (and the signed audit.*.intoto.jsonl with --key)", required: true },
    pins: { type: "string", description: "a pins file besides those found next to --file (nix/sources.json, npins/sources.json)", multiple: true },
    "closure-sha256": { type: "string", description: "require this SHA-256 (hex) of the closure (default: the digest the provenance records)" },
    "nix-root": { type: "string", description: "bwrap only: a root filesystem whose Nix runs the audit instead of the host's (scripts/nix-rootfs.sh: Debian sid's Nix 2.34)" },
    key: { type: "string", description: "YOUR Ed25519 private key (PKCS#8 PEM): sign the audit's provenance and verification summary" },
    "key-env": { type: "string", description: "name of an environment variable holding your private key's PEM instead of --key" },
    "builder-id": { type: "string", description: "your builder id (a URI), recorded in what you sign", default: DEFAULT_BUILDER_ID },
    ...BUILDER_OPTIONS,
  },
  workDir: ({ values }) => values.out,
  async run({ values }) {
    const isolation = values.isolation;
    if (isolation !== "bwrap" && isolation !== "docker") throw new InputError(`unknown --isolation '${isolation}' (expected bwrap or docker)`);
    const target = targetFrom(values);
    for (const [opt, f] of [["--closure", values.closure], ["--attestation", values.attestation], ["--public-key", values["public-key"]]] as const) {
      if (!fs.existsSync(f)) throw new InputError(`${opt} ${f} does not exist`);
    }
    const key = values.key || values["key-env"] ? readSigningKey(values) : undefined;
    return audit({
      ...buildersFrom(values),
      ...target,
      closure: values.closure,
      attestation: values.attestation,
      publicKey: values["public-key"],
      isolation,
      image: values.image,
      out: values.out,
      pins: values.pins ?? [],
      closureSha256: values["closure-sha256"],
      nixRoot: values["nix-root"] === undefined ? undefined : path.resolve(values["nix-root"]),
      key,
      builderId: values["builder-id"],
    });
  },
};
