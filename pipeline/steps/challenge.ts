// `supply-chain challenge`: several independently keyed provenance attestations of one derivation,
// compared path by path (like `guix challenge` and trustix for substitutes): which builders got the
// same NAR for each store path and which did not. Offline: only the envelopes and the keys.
import { NAR_SHA256, SLSA_PROVENANCE_V1 } from "../lib/in-toto";
import { CheckFailed, InputError, StepDefinition } from "../lib/step";
import { splitStorePath } from "../lib/storepath";
import { VerifiedStatement, verifiedStatement } from "../lib/attestation";

export interface ChallengedPath {
  path: string;
  /** keyid → hex NAR sha256, in argument order. */
  digests: Record<string, string>;
  agree: boolean;
  /** The builders grouped by the digest they attest, groups in order of first appearance. */
  groups: { digest: string; builders: string[] }[];
}

export interface ChallengeResult {
  agree: boolean;
  drvPath: string | null;
  /** keyids of the public keys, in argument order. */
  builders: string[];
  /** keyid → the provenance's runDetails.builder.id (what the builder says it is; only the key is checked). */
  builderIds: Record<string, string | null>;
  /** keyid → the attestation file it verified. */
  attestations: Record<string, string>;
  /** Every store path attested by at least two builders, sorted. */
  paths: ChallengedPath[];
  /** Store paths attested by one builder only: nothing to compare them with. */
  unmatched: { path: string; builders: string[] }[];
  reason?: string;
  /** The attestations whose signature or statement did not verify (then nothing is compared). */
  rejected?: { attestation: string; keyid: string; reason: string }[];
}

interface Believed {
  file: string;
  keyid: string;
  drvPath: string;
  builderId: string | null;
  /** store path → hex NAR sha256 */
  nar: Map<string, string>;
}

/** What challenge reads of a verified provenance statement; anything malformed is bad input naming the file. */
function provenanceOf(file: string, v: VerifiedStatement): Believed {
  const { predicateType, predicate, subject } = v.statement;
  if (predicateType !== SLSA_PROVENANCE_V1) throw new InputError(`${file}: predicate type is ${predicateType}, challenge compares ${SLSA_PROVENANCE_V1} only`);
  const drvPath = predicate?.buildDefinition?.internalParameters?.drvPath;
  if (typeof drvPath !== "string" || !drvPath.endsWith(".drv") || !isStorePath(drvPath)) {
    throw new InputError(`${file}: predicate.buildDefinition.internalParameters.drvPath is ${JSON.stringify(drvPath)}, not a .drv store path`);
  }
  const id = predicate?.runDetails?.builder?.id;
  const nar = new Map<string, string>();
  for (const s of subject) {
    const digest = s.digest[NAR_SHA256];
    if (digest === undefined) continue; // a shipped file's sha256: not a store path, not compared
    if (!isStorePath(s.name)) throw new InputError(`${file}: subject ${JSON.stringify(s.name)} has a ${NAR_SHA256} digest but is not a store path`);
    if (typeof digest !== "string" || !/^[0-9a-fA-F]{64}$/.test(digest)) throw new InputError(`${file}: subject ${s.name} has ${NAR_SHA256} ${JSON.stringify(digest)}, not 64 hex digits`);
    const hex = digest.toLowerCase();
    const seen = nar.get(s.name);
    if (seen !== undefined && seen !== hex) throw new InputError(`${file}: subject ${s.name} is listed twice, with ${NAR_SHA256} ${seen} and ${hex}`);
    nar.set(s.name, hex);
  }
  return { file, keyid: v.keyid, drvPath, builderId: typeof id === "string" ? id : null, nar };
}

function isStorePath(p: string): boolean {
  try {
    splitStorePath(p);
    return true;
  } catch {
    return false;
  }
}

function groupsOf(digests: Record<string, string>): ChallengedPath["groups"] {
  const groups = new Map<string, string[]>();
  for (const [keyid, d] of Object.entries(digests)) groups.set(d, [...(groups.get(d) ?? []), keyid]);
  return [...groups].map(([digest, builders]) => ({ digest, builders }));
}

/** Pure: the comparison of believed attestations (all of one drvPath, distinct keys). */
function compare(believed: Believed[]): ChallengeResult {
  const byPath = new Map<string, Record<string, string>>();
  for (const b of believed) for (const [p, d] of b.nar) byPath.set(p, { ...byPath.get(p), [b.keyid]: d });
  const paths: ChallengedPath[] = [];
  const unmatched: ChallengeResult["unmatched"] = [];
  for (const p of [...byPath.keys()].sort()) {
    const digests = byPath.get(p)!;
    const keyids = Object.keys(digests);
    if (keyids.length < 2) unmatched.push({ path: p, builders: keyids });
    else {
      const groups = groupsOf(digests);
      paths.push({ path: p, digests, agree: groups.length === 1, groups });
    }
  }
  return {
    agree: paths.length > 0 && paths.every((p) => p.agree),
    drvPath: believed[0]?.drvPath ?? null,
    builders: believed.map((b) => b.keyid),
    builderIds: Object.fromEntries(believed.map((b) => [b.keyid, b.builderId])),
    attestations: Object.fromEntries(believed.map((b) => [b.keyid, b.file])),
    paths,
    unmatched,
  };
}

function disagreement(r: ChallengeResult): string | undefined {
  if (r.paths.length === 0) return `no store path is attested by two builders: nothing to compare (${r.unmatched.length} attested by one only)`;
  const differing = r.paths.filter((p) => !p.agree);
  if (differing.length === 0) return undefined;
  const first = differing[0];
  const who = first.groups.map((g) => `${NAR_SHA256} ${g.digest} from ${g.builders.join(", ")}`).join("; ");
  return `${first.path} differs: ${who}${differing.length > 1 ? ` (and ${differing.length - 1} more paths differ)` : ""}`;
}

export function challenge(o: { attestations: string[]; publicKeys: string[] }): ChallengeResult {
  const { attestations, publicKeys } = o;
  if (attestations.length !== publicKeys.length) {
    throw new InputError(`${attestations.length} --attestation but ${publicKeys.length} --public-key: the i-th key verifies the i-th attestation`);
  }
  if (attestations.length < 2) throw new InputError(`${attestations.length} attestation given: challenge compares at least two`);
  const verified = attestations.map((file, i) => ({ file, r: verifiedStatement(file, publicKeys[i]) }));
  // One key is one party, whatever the builder ids say: two of its attestations prove nothing independent.
  const keyids = verified.map((x) => (x.r.ok ? x.r.v.keyid : x.r.keyid));
  const dup = keyids.findIndex((k, i) => keyids.indexOf(k) !== i);
  if (dup >= 0) {
    throw new InputError(`${publicKeys[keyids.indexOf(keyids[dup])]} and ${publicKeys[dup]} are the same key (keyid ${keyids[dup]}): its attestations are not independent`);
  }
  const rejected = verified.flatMap((x, i) => (x.r.ok ? [] : [{ attestation: x.file, keyid: keyids[i], reason: x.r.reason }]));
  if (rejected.length) {
    // Never dropped: an attestation that does not verify is a party whose claim cannot be counted either way.
    const reason = `${rejected[0].attestation}: ${rejected[0].reason}${rejected.length > 1 ? ` (and ${rejected.length - 1} more attestations do not verify)` : ""}`;
    const attested = Object.fromEntries(keyids.map((k, i) => [k, attestations[i]]));
    throw new CheckFailed(reason, { ...compare([]), builders: keyids, attestations: attested, reason, rejected } satisfies ChallengeResult);
  }
  const believed = verified.flatMap((x) => (x.r.ok ? [provenanceOf(x.file, x.r.v)] : []));
  const other = believed.find((b) => b.drvPath !== believed[0].drvPath);
  if (other) {
    throw new InputError(`${believed[0].file} is of ${believed[0].drvPath} but ${other.file} is of ${other.drvPath}: challenge compares builds of one derivation`);
  }
  const result = compare(believed);
  const reason = disagreement(result);
  if (reason) throw new CheckFailed(reason, { ...result, reason });
  return result;
}

export const step: StepDefinition<ChallengeResult> = {
  name: "challenge",
  summary: "offline: compare independently keyed provenance attestations of one derivation, store path by store path: which builders agree",
  options: {
    attestation: { type: "string", description: "a provenance envelope (provenance.intoto.jsonl); at least two", multiple: true, required: true },
    "public-key": { type: "string", description: "the public key (SPKI PEM) that verifies the attestation in the same position", multiple: true, required: true },
  },
  async run({ values }) {
    return challenge({ attestations: values.attestation, publicKeys: values["public-key"] });
  },
};
