// `supply-chain verify-attestation`: the auditor's offline check of an attestation with a public key:
// the DSSE signature, the in-toto Statement and its predicate type, and that each given file or store
// path is what a subject records. No network, no state of ours: only the envelope, the key, the bytes.
import * as fs from "node:fs";
import * as path from "node:path";
import { sha256File } from "../lib/files";
import { NAR_SHA256, Subject } from "../lib/in-toto";
import { run } from "../lib/proc";
import { CheckFailed, InputError, StepDefinition } from "../lib/step";
import { verifiedStatement } from "../lib/attestation";
import { parseHash } from "../lib/storepath";

export interface Checked {
  kind: "artifact" | "storePath";
  name: string;
  digest: Record<string, string>;
  /** The subject that matched (or that has the same name, when the digests differ). */
  subject: string | null;
  ok: boolean;
  reason?: string;
}

export interface VerifyAttestationResult {
  verified: boolean;
  keyid: string;
  predicateType: string | null;
  subjects: Subject[];
  checked: Checked[];
  reason?: string;
}

/** A file subject is named by its path relative to the build output: match on that suffix. */
function namedLike(file: string, subjectName: string): boolean {
  const abs = path.resolve(file);
  return subjectName === path.basename(abs) || abs.endsWith(`/${subjectName}`);
}

export async function checkArtifact(file: string, subjects: Subject[]): Promise<Checked> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new InputError(`--artifact ${file} does not exist`);
  if (!st.isFile()) throw new InputError(`--artifact ${file} is not a regular file (for an image directory give its files, e.g. kernel and initrd)`);
  const sha256 = await sha256File(file);
  const base = { kind: "artifact" as const, name: file, digest: { sha256 } };
  const byDigest = subjects.find((s) => s.digest.sha256 === sha256);
  const byName = subjects.find((s) => s.digest.sha256 !== undefined && namedLike(file, s.name));
  if (byDigest && (!byName || byName === byDigest)) return { ...base, subject: byDigest.name, ok: true };
  if (byName) {
    return { ...base, subject: byName.name, ok: false, reason: `artifact ${file} has sha256 ${sha256}, subject ${byName.name} records sha256 ${byName.digest.sha256}` };
  }
  return { ...base, subject: null, ok: false, reason: `artifact ${file} (sha256 ${sha256}) is not a subject of the attestation` };
}

async function localNarSha256(storePath: string): Promise<string> {
  const r = await run("nix-store", ["--query", "--hash", storePath], { allowFailure: true, streamStderr: false });
  if (r.code !== 0) throw new InputError(`--store-path ${storePath} is not a valid path in the local store: ${r.stderr.trim().split("\n").pop()}`);
  return parseHash(r.stdout.trim(), "sha256").hex;
}

export async function checkStorePath(storePath: string, subjects: Subject[]): Promise<Checked> {
  const hex = await localNarSha256(storePath);
  const base = { kind: "storePath" as const, name: storePath, digest: { [NAR_SHA256]: hex } };
  const s = subjects.find((x) => x.name === storePath);
  if (!s) return { ...base, subject: null, ok: false, reason: `store path ${storePath} is not a subject of the attestation` };
  if (s.digest[NAR_SHA256] !== hex) {
    return { ...base, subject: s.name, ok: false, reason: `store path ${storePath} has NAR sha256 ${hex} here, the subject records ${s.digest[NAR_SHA256] ?? "no " + NAR_SHA256}` };
  }
  return { ...base, subject: s.name, ok: true };
}

export async function verifyAttestation(o: { attestation: string; publicKey: string; predicateType?: string; artifacts: string[]; storePaths: string[] }): Promise<VerifyAttestationResult> {
  const r = verifiedStatement(o.attestation, o.publicKey);
  const fail = (reason: string, extra: Partial<VerifyAttestationResult> = {}): never => {
    throw new CheckFailed(reason, { verified: false, keyid: r.ok ? r.v.keyid : r.keyid, predicateType: null, subjects: [], checked: [], reason, ...extra });
  };
  if (!r.ok) return fail(r.reason);
  const { keyid, statement } = r.v;
  const subjects = statement.subject;
  const predicateType = statement.predicateType;
  if (o.predicateType && predicateType !== o.predicateType) {
    return fail(`wrong predicate type: the statement is ${predicateType}, expected ${o.predicateType}`, { predicateType, subjects });
  }
  const checked: Checked[] = [];
  for (const a of o.artifacts) checked.push(await checkArtifact(a, subjects));
  for (const p of o.storePaths) checked.push(await checkStorePath(p, subjects));
  const failed = checked.filter((c) => !c.ok);
  const result: VerifyAttestationResult = { verified: failed.length === 0, keyid, predicateType, subjects, checked };
  if (failed.length) {
    const reason = failed.length > 1 ? `${failed[0].reason} (and ${failed.length - 1} more)` : failed[0].reason!;
    throw new CheckFailed(reason, { ...result, reason });
  }
  return result;
}

export const step: StepDefinition<VerifyAttestationResult> = {
  name: "verify-attestation",
  summary: "offline: check a DSSE/in-toto attestation's signature with a public key, its predicate type, and files or store paths against its subjects",
  options: {
    attestation: { type: "string", description: "the envelope (e.g. provenance.intoto.jsonl)", required: true },
    "public-key": { type: "string", description: "the signer's Ed25519 public key, SPKI PEM (signing.pub)", required: true },
    "predicate-type": { type: "string", description: "required predicate type, e.g. https://slsa.dev/provenance/v1 (default: any)" },
    artifact: { type: "string", description: "a file whose sha256 must equal a subject's", multiple: true },
    "store-path": { type: "string", description: "a store path whose NAR hash (local store) must equal its subject's", multiple: true },
  },
  async run({ values }) {
    return verifyAttestation({
      attestation: values.attestation,
      publicKey: values["public-key"],
      predicateType: values["predicate-type"],
      artifacts: values.artifact ?? [],
      storePaths: values["store-path"] ?? [],
    });
  },
};
