// in-toto Statement v1 with the SLSA Provenance v1 and Verification Summary v1 predicates, built as pure
// functions of what the steps printed (docs/attest.md defines our buildType and digest keys).
import type { Manifest } from "../steps/closure";
import type { BuilderRecord } from "./builders";

export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1";
export const SLSA_VSA_V1 = "https://slsa.dev/verification_summary/v1";
/** Ours: a Nix target built by `supply-chain build`, its sources exported by `supply-chain closure`. */
export const BUILD_TYPE = "https://github.com/secure-supply-chain/buildtypes/nix-build/v1";
/** The policy our verification summary applies: offline rebuild bit-for-bit identical (and booted, when tested). */
export const VSA_POLICY_URI = "https://github.com/secure-supply-chain/policies/rebuild-verify/v1";
/** Extension field of the summary (the VSA allows fields named by URIs): the verdicts' details. */
export const VSA_DETAILS_KEY = "https://github.com/secure-supply-chain/verification-details/v1";
/** Digest key of a store path: sha256 of its NAR serialisation (what `nix-store -q --hash` reports), hex. */
export const NAR_SHA256 = "nixNarSha256";

export type DigestSet = Record<string, string>;

export interface ResourceDescriptor {
  name?: string;
  uri?: string;
  digest?: DigestSet;
  annotations?: Record<string, unknown>;
}

export interface Subject {
  name: string;
  digest: DigestSet;
}

export interface Statement<P = unknown> {
  _type: typeof STATEMENT_TYPE;
  subject: Subject[];
  predicateType: string;
  predicate: P;
}

const capitalised = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

/**
 * The hash the reviewed Nix files declare, keyed by what it covers: a flat (or text) hash is the hash of
 * the file itself (`sha256`, `sha512`, ... as in-toto's DigestSet), a recursive one of the NAR
 * serialisation (`nixNarSha256`), a git one of a git object (`nixGitSha1`).
 */
export function declaredDigest(h: { mode: string; algo: string; value: string }): DigestSet {
  if (h.mode === "flat" || h.mode === "text") return { [h.algo]: h.value };
  return { [`nix${h.mode === "recursive" ? "Nar" : capitalised(h.mode)}${capitalised(h.algo)}`]: h.value };
}

export interface ArtifactFile {
  /** Subject name: the file's path relative to the build output's parent, e.g. `<hash>-image/kernel`. */
  name: string;
  sha256: string;
}

export interface BuiltPath {
  path: string;
  narSha256: string;
}

/** Shipped files with a plain sha256 (what generic tools check), then every built store path by NAR hash. */
export function subjectsOf(artifacts: ArtifactFile[], built: BuiltPath[]): Subject[] {
  return [
    ...artifacts.map((a) => ({ name: a.name, digest: { sha256: a.sha256 } })),
    ...built.map((b) => ({ name: b.path, digest: { [NAR_SHA256]: b.narSha256 } })),
  ];
}

export function statement<P>(subject: Subject[], predicateType: string, predicate: P): Statement<P> {
  return { _type: STATEMENT_TYPE, subject, predicateType, predicate };
}

/** Every fixed-output source (its declared hash, its first URL) and every evaluation-time path (its NAR hash). */
export function resolvedDependencies(m: Manifest, evalPathNarSha256: Map<string, string>): ResourceDescriptor[] {
  const deps: ResourceDescriptor[] = m.sources.map((s) => ({
    name: s.path,
    ...(s.urls.length ? { uri: s.urls[0] } : {}),
    digest: declaredDigest(s.hash),
    annotations: { kind: "fixed-output", drv: s.drv, hashMode: s.hash.mode, ...(s.urls.length > 1 ? { mirrors: s.urls.slice(1) } : {}) },
  }));
  for (const e of m.evalPaths) {
    const nar = evalPathNarSha256.get(e.path);
    if (!nar) throw new Error(`no NAR hash for the evaluation-time path ${e.path}`);
    deps.push({ name: e.path, digest: { [NAR_SHA256]: nar }, annotations: { kind: "evaluation-time", neededBy: e.neededBy } });
  }
  for (const x of m.pinnedInputs ?? []) {
    const urls = x.pinnedIn.flatMap((p) => (p.url ? [p.url] : []));
    deps.push({ name: x.path, ...(urls.length ? { uri: urls[0] } : {}), digest: { [NAR_SHA256]: x.narSha256 }, annotations: { kind: "pinned-input", pinnedIn: x.pinnedIn.map((p) => p.pin), detectedBy: x.detectedBy } });
  }
  return deps;
}

export interface SourceParameters {
  /** Relative to the checkout when `git` is set, else absolute. */
  file?: string;
  attribute?: string;
  flake?: string;
  git?: { commit: string; tree: string; dirty: boolean; remote?: string };
}

export interface ProvenanceInput {
  source: SourceParameters;
  drvPath: string;
  nixVersion: string;
  sandbox: boolean;
  isolation: string | null;
  rebuilderImage: string | null;
  /** The Nix remote builders the offline rebuild could use, with the host key required of each. */
  remoteBuilders?: BuilderRecord[];
  dependencies: ResourceDescriptor[];
  builderId: string;
  toolVersion: string;
  invocationId: string;
  startedOn: string | null;
  finishedOn: string | null;
  byproducts: ResourceDescriptor[];
}

export function provenancePredicate(p: ProvenanceInput) {
  return {
    buildDefinition: {
      buildType: BUILD_TYPE,
      externalParameters: { source: p.source },
      internalParameters: {
        drvPath: p.drvPath,
        nixVersion: p.nixVersion,
        sandbox: p.sandbox,
        isolation: p.isolation,
        rebuilderImage: p.rebuilderImage,
        ...(p.remoteBuilders?.length ? { remoteBuilders: p.remoteBuilders } : {}),
      },
      resolvedDependencies: p.dependencies,
    },
    runDetails: {
      builder: { id: p.builderId, version: { "secure-supply-chain": p.toolVersion, nix: p.nixVersion } },
      metadata: {
        invocationId: p.invocationId,
        ...(p.startedOn ? { startedOn: p.startedOn } : {}),
        ...(p.finishedOn ? { finishedOn: p.finishedOn } : {}),
      },
      byproducts: p.byproducts,
    },
  };
}

export interface RebuildVerdict {
  reproducible: boolean;
  matched: number;
  checked: number;
  mismatched: string[];
  isolation: string;
  interfaces: string[] | null;
  image: string | null;
  imageDigest: string | null;
}

export interface BootVerdict {
  passed: boolean;
  probesPassed: number;
  probes: { name: string; ok: boolean }[];
  accel: string;
}

export interface VerificationInput {
  verifierId: string;
  toolVersion: string;
  nixVersion: string;
  timeVerified: string;
  resourceUri: string;
  provenance: ResourceDescriptor;
  rebuild: RebuildVerdict;
  boot: BootVerdict | null;
}

/** Custom levels (the VSA reserves `SLSA_` names for SLSA's own tracks, which this does not evaluate). */
export const LEVEL_REBUILT = "SECURE_SUPPLY_CHAIN_REBUILT_BIT_IDENTICAL";
export const LEVEL_BOOTED = "SECURE_SUPPLY_CHAIN_BOOT_TESTED";

export function verificationPredicate(v: VerificationInput) {
  const passed = v.rebuild.reproducible && (v.boot === null || v.boot.passed);
  return {
    verifier: { id: v.verifierId, version: { "secure-supply-chain": v.toolVersion, nix: v.nixVersion } },
    timeVerified: v.timeVerified,
    resourceUri: v.resourceUri,
    policy: { uri: VSA_POLICY_URI },
    inputAttestations: [v.provenance],
    verificationResult: passed ? "PASSED" : "FAILED",
    verifiedLevels: passed ? [LEVEL_REBUILT, ...(v.boot ? [LEVEL_BOOTED] : [])] : ["FAILED"],
    slsaVersion: "1.0",
    [VSA_DETAILS_KEY]: { rebuild: v.rebuild, bootTest: v.boot },
  };
}
